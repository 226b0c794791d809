"""HF transformers (PyTorch) on the CPU, for the CPU rows of README's performance section.

The same training step and `generate` call as bench/hf_reference_bench.py, with dev = 'cpu',
fp32, and the shapes igpt's CPU benchmarks use. Run beside `igpt bench train|sample` on one machine:
    python bench/hf_cpu_bench.py    (needs torch and transformers)
"""
import sys, time, torch
from transformers import ImageGPTConfig, ImageGPTForCausalImageModeling

def bench(name, n_embd, n_layer, n_head, vocab, npos, batch_train, batch_gen, steps):
    cfg = ImageGPTConfig(vocab_size=vocab + 1, n_positions=npos, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    m = ImageGPTForCausalImageModeling(cfg)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=(0.9, 0.95))
    x = torch.randint(0, vocab, (batch_train, npos))
    inp = torch.cat([torch.full((batch_train, 1), vocab), x[:, :-1]], 1)
    def step():
        logits = m(input_ids=inp).logits[..., :vocab]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), x.reshape(-1))
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss
    step()
    t = time.time()
    for _ in range(steps): l = step()
    dt = time.time() - t
    print(f"{name} train fp32 batch={batch_train} ctx={npos}: {batch_train * npos * steps / dt:,.0f} tok/s "
          f"(attention: {m.config._attn_implementation}, {torch.get_num_threads()} threads), loss {l.item():.3f}", flush=True)
    m.eval()
    with torch.no_grad():
        ids = torch.full((batch_gen, 1), vocab)
        m.generate(ids, max_length=17, do_sample=True, top_k=vocab, pad_token_id=vocab)
        t = time.time()
        m.generate(ids, max_length=npos + 1, do_sample=True, top_k=vocab, pad_token_id=vocab, use_cache=True)
        dt = time.time() - t
    print(f"{name} generate fp32 batch={batch_gen} tokens={npos}: {npos / dt:,.1f} steps/s, {batch_gen * npos / dt:,.0f} tok/s", flush=True)

# Names given on the command line pick benchmarks (e.g. `fmnist-256x2`); none runs them all.
runs = [('tiny(64x2x4)', 64, 2, 4), ('fmnist-mini(128x2x1)', 128, 2, 1), ('fmnist-256x2(256x2x1)', 256, 2, 1)]
for name, d, layers, heads in runs:
    if len(sys.argv) < 2 or any(name.startswith(arg) for arg in sys.argv[1:]):
        bench(name, d, layers, heads, 16, 784, 16, 4, steps=3)
