//! The inspector's numbers (`igpt::inspect`) on the HF fixture (2 layers, 4 heads, 8×8): the traced
//! pass gives the fused pass's logits, its attention probabilities are HF's (`output_attentions`,
//! `attentions.json`), and the per-pixel surprise agrees with `eval`.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::{B, expected, fixture_dir, max_abs_diff};
use igpt::eval::sequence_nll;
use igpt::inspect::Inspected;
use igpt::sample::SamplingConfig;
use igpt::{ForwardOptions, store};

fn fixture() -> store::StoredModel<B> {
    store::load_dir::<B>(&fixture_dir(), &Default::default()).unwrap()
}

/// The inspector's pass: the residual stream and every layer's queries and keys kept.
fn traced_options<'a>() -> ForwardOptions<'a, B> {
    ForwardOptions {
        residual: true,
        attention: true,
        ..Default::default()
    }
}

fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

#[test]
fn the_traced_pass_gives_the_fused_pass_logits() {
    let stored = fixture();
    let exp = expected();
    let (b, t) = (exp.model_input.len(), exp.model_input[0].len());
    let flat: Vec<i64> = exp.model_input.concat();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(flat, [b, t]), &Default::default());
    let fused = floats(stored.model.forward(ids.clone()));
    let trace = stored.model.forward_with(ids, traced_options());
    let traced = floats(stored.model.logits(trace.normed.clone()));
    assert!(max_abs_diff(&traced, &fused) < 1e-5);
    assert_eq!(trace.attention.len(), 2);
    assert_eq!(trace.attention_weights(0).dims(), [b, 4, t, t]);
    assert_eq!(trace.residual.len(), 3);
}

/// HF transformers' `output_attentions=True` on the fixture's first input (`make_hf_attentions.py`).
#[test]
fn attention_probabilities_match_hf() {
    let path = fixture_dir().join("attentions.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // [layer][head][query][key]
    let hf: Vec<Vec<Vec<Vec<f32>>>> = serde_json::from_str(&text).unwrap();
    let stored = fixture();
    let input = expected().model_input.swap_remove(0);
    let t = input.len();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [1, t]), &Default::default());
    let trace = stored.model.forward_with(ids, traced_options());
    assert_eq!(trace.attention.len(), hf.len());
    for (layer, theirs) in hf.iter().enumerate() {
        let theirs: Vec<f32> = theirs.iter().flatten().flatten().copied().collect();
        let diff = max_abs_diff(&floats(trace.attention_weights(layer)), &theirs);
        // HF's numbers are rounded to 7 decimals.
        assert!(diff < 2e-6, "layer {layer}: {diff} off HF's attentions");
    }
    // The inspector's rows, formed one pixel at a time from the queries and keys: the same numbers.
    let ids: Vec<u16> = expected().input_ids[0].iter().map(|&i| i as u16).collect();
    let inspected = Inspected::new(&stored.model, &ids, 8).unwrap();
    for (layer, heads) in hf.iter().enumerate() {
        for (head, rows) in heads.iter().enumerate() {
            for (pixel, row) in rows.iter().enumerate() {
                let ours = inspected.attention_of(pixel, layer, head);
                let diff = max_abs_diff(&ours, &row[..=pixel]);
                assert!(
                    diff < 2e-6,
                    "layer {layer}, head {head}, pixel {pixel}: {diff} off HF"
                );
            }
        }
    }
}

#[test]
fn an_inspection_agrees_with_eval_and_with_itself() {
    let stored = fixture();
    let ids: Vec<u16> = expected().input_ids[1].iter().map(|&i| i as u16).collect();
    let inspected = Inspected::new(&stored.model, &ids, 8).unwrap();
    let report = inspected.report([3, 5]).unwrap();

    // The mean surprise is the image's bits/token, as eval measures it.
    let nll = sequence_nll(&stored.model, std::slice::from_ref(&ids), 1, |_| {}).unwrap();
    assert!((report.mean_bits - nll.bits_per_token).abs() < 1e-5);
    assert_eq!(report.bits_per_pixel.len(), 64);
    assert!(report.bits_per_pixel.iter().all(|&b| b >= 0.0));

    // Pixel (3, 5) is raster index 29: its surprise is −log₂ of its colour's probability.
    let pixel = 3 * 8 + 5;
    assert_eq!(report.actual.id, ids[pixel]);
    assert!((report.bits_per_pixel[pixel] + report.actual.p.log2()).abs() < 1e-4);
    let probs: Vec<f32> = inspected
        .log_probs_at(pixel)
        .iter()
        .map(|l| l.exp())
        .collect();
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    let above = probs.iter().filter(|&&p| p > report.actual.p).count();
    assert_eq!(report.actual.rank, above + 1);

    // The top five: the five largest probabilities, in order.
    let mut sorted = probs.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    assert_eq!(report.top.len(), 5);
    for (choice, want) in report.top.iter().zip(&sorted) {
        assert_eq!(choice.p, *want);
        assert_eq!(probs[choice.id as usize], choice.p);
    }

    // As sampling at temperature 1 draws: the model's own distribution, the same top five and rank.
    let device = Default::default();
    let plain = inspected
        .reshaped::<B>(pixel, &SamplingConfig::default(), 5, &device)
        .unwrap();
    assert_eq!(plain.rank, Some(report.actual.rank));
    assert!((plain.actual.p - report.actual.p).abs() < 1e-5);
    for (got, want) in plain.choices.iter().zip(&report.top) {
        assert_eq!(got.id, want.id);
        assert!((got.p - want.p).abs() < 1e-5);
    }
    // Top-k keeps k colours: at a pixel the model did not guess first, a cut just above its true
    // colour leaves it out (p 0, no rank).
    let missed = (0..64)
        .find(|&i| inspected.actual(i).rank > 1)
        .expect("the model guesses some pixel wrong");
    let rank = inspected.actual(missed).rank;
    let cut = SamplingConfig::zero_as_off(1.0, rank - 1, 0.0);
    let reshaped = inspected.reshaped::<B>(missed, &cut, 16, &device).unwrap();
    assert_eq!(reshaped.choices.len(), rank - 1);
    assert_eq!((reshaped.actual.p, reshaped.rank), (0.0, None));

    // Attention: every layer and head, over positions 0..=29, summing to 1.
    assert_eq!(report.attention.len(), 2);
    for heads in &report.attention {
        assert_eq!(heads.len(), 4);
        for weights in heads {
            assert_eq!(weights.len(), pixel + 1);
            assert!((weights.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}

#[test]
fn bad_pixels_and_images_are_errors() {
    let stored = fixture();
    let ids = vec![0u16; 64];
    let inspected = Inspected::new(&stored.model, &ids, 8).unwrap();
    let e = inspected.report([8, 0]).unwrap_err().to_string();
    assert!(e.contains("outside the 8x8 image"), "{e}");
    let e = Inspected::new(&stored.model, &ids[..63], 8)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("reads 64 pixels"), "{e}");
    let e = Inspected::new(&stored.model, &[16u16; 64], 8)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("holds id 16, past the model's 16 colours"),
        "{e}"
    );
}

#[test]
fn layer_features_and_position_similarity_cover_every_position() {
    let stored = fixture();
    let ids: Vec<u16> = expected().input_ids[0].iter().map(|&i| i as u16).collect();
    let inspected = Inspected::new(&stored.model, &ids, 8).unwrap();
    assert_eq!(inspected.n_embd, 32);
    // The embeddings and both blocks' outputs: each an 8×8 RGB picture whose three components are
    // stretched to the full 0..=255 range.
    for layer in 0..=2 {
        let rgb = inspected.features_rgb(layer);
        assert_eq!(rgb.len(), 64 * 3);
        for c in 0..3 {
            let channel: Vec<u8> = rgb.iter().skip(c).step_by(3).copied().collect();
            assert_eq!(
                (channel.iter().min(), channel.iter().max()),
                (Some(&0), Some(&255)),
                "layer {layer}, component {c}"
            );
        }
    }
    // Different layers see different structure.
    assert_ne!(inspected.features_rgb(0), inspected.features_rgb(2));
    let similarity = inspected.position_similarity(9);
    assert_eq!(similarity.len(), 64);
    assert!((similarity[9] - 1.0).abs() < 1e-5);
    assert!(similarity.iter().all(|s| (-1.0001..=1.0001).contains(s)));
}

/// One heat ramp for the CLI's panels and the page's views: its stops at 0, 1/3, 2/3 and 1, clamped
/// outside, and the page's table of it ends on the same colours.
#[test]
fn the_heat_ramp_runs_through_its_stops_and_the_page_gets_the_same_table() {
    use igpt::inspect::{heat, heat_ramp};
    assert_eq!(heat(0.0), [0, 0, 4]);
    assert_eq!(heat(1.0 / 3.0), [100, 30, 130]);
    assert_eq!(heat(2.0 / 3.0), [235, 100, 50]);
    assert_eq!(heat(1.0), [252, 253, 191]);
    assert_eq!((heat(-1.0), heat(2.0)), (heat(0.0), heat(1.0)));
    let table = heat_ramp(256);
    assert_eq!(table.len(), 3 * 256);
    assert_eq!(
        (&table[..3], &table[765..]),
        (&heat(0.0)[..], &heat(1.0)[..])
    );
    assert_eq!(&table[3 * 128..3 * 129], &heat(128.0 / 255.0)[..]);
}

/// The logit lens: its last layer is the model's output (`forward`, whose logits are HF's), every
/// layer is that layer's hidden states through the final norm and head (recomputed here from the
/// residual stream, to check the lens's layout), and the report's lens agrees with its own top,
/// actual and surprise.
#[test]
fn the_logit_lens_reads_every_layer_and_its_last_layer_is_the_output() {
    use burn::tensor::activation::log_softmax;
    let stored = fixture();
    let model = &stored.model;
    let ids: Vec<u16> = expected().input_ids[1].iter().map(|&i| i as u16).collect();
    let inspected = Inspected::new(model, &ids, 8).unwrap();
    let device = Default::default();
    let (inputs, _) = igpt::pixels::tokens::inputs_and_targets::<B>(
        std::iter::once(&ids[..]),
        model.n_colors(),
        &device,
    );
    let k = model.n_colors();
    let output = floats(log_softmax(model.forward(inputs.clone()), 2));
    let residual = model.forward_with(inputs, traced_options()).residual;
    assert_eq!(residual.len(), 3);
    for (layer, states) in residual.into_iter().enumerate() {
        let read = floats(log_softmax(model.logits(model.final_norm(states)), 2));
        for pixel in 0..64 {
            let lens = inspected.lens_log_probs(layer, pixel);
            let want = &read[pixel * k..(pixel + 1) * k];
            assert!(
                max_abs_diff(lens, want) < 1e-5,
                "layer {layer}, pixel {pixel}"
            );
            if layer == 2 {
                let out = &output[pixel * k..(pixel + 1) * k];
                assert!(
                    max_abs_diff(lens, out) < 1e-5,
                    "pixel {pixel}: not the output"
                );
            }
        }
    }
    // Earlier layers know less: the embeddings' read is not the output.
    assert!(inspected.lens_bits(0) != inspected.lens_bits(2));

    let report = inspected.report([3, 5]).unwrap();
    let pixel = 3 * 8 + 5;
    assert_eq!(report.lens.len(), 3);
    assert_eq!(report.lens_bits_per_pixel.len(), 3);
    assert_eq!(report.lens_bits_per_pixel[2], report.bits_per_pixel);
    let last = &report.lens[2];
    assert_eq!(last.actual, report.actual);
    assert_eq!(last.top[..], report.top[..3]);
    for (layer, entry) in report.lens.iter().enumerate() {
        assert_eq!(entry.layer, layer);
        assert_eq!(entry.bits, report.lens_bits_per_pixel[layer][pixel]);
        assert!((entry.bits + entry.actual.p.log2()).abs() < 1e-4);
    }
}

/// Direct logit attribution: at every pixel the parts (embeddings, 4 heads, attention bias and MLP
/// of each of the 2 layers) sum to the true colour's logit, which is the plain forward's.
#[test]
fn the_attribution_parts_sum_to_the_true_colours_logit() {
    let stored = fixture();
    let model = &stored.model;
    let ids: Vec<u16> = expected().input_ids[1].iter().map(|&i| i as u16).collect();
    let inspected = Inspected::new(model, &ids, 8).unwrap();
    let (inputs, _) = igpt::pixels::tokens::inputs_and_targets::<B>(
        std::iter::once(&ids[..]),
        model.n_colors(),
        &Default::default(),
    );
    let k = model.n_colors();
    let logits = floats(model.forward(inputs));
    let mut worst: f32 = 0.0;
    for pixel in 0..64 {
        let attribution = inspected.attribution(pixel);
        assert_eq!(attribution.parts.len(), 1 + 2 * (4 + 2));
        assert_eq!(attribution.parts[0].name, "embeddings");
        assert_eq!(attribution.parts[12].name, "layer 1 MLP");
        let want = logits[pixel * k + ids[pixel] as usize];
        assert!((attribution.logit - want).abs() < 1e-5, "pixel {pixel}");
        let sum: f32 = attribution.parts.iter().map(|p| p.logit).sum();
        worst = worst.max((sum - want).abs() / want.abs().max(1.0));
    }
    assert!(
        worst < 1e-4,
        "the parts miss the logit by {worst} (relative)"
    );
    // The parts are not all one: the heads write different things.
    let parts = inspected.attribution(29).parts;
    assert!(parts[1].logit != parts[2].logit);
    assert_eq!(
        inspected.report([3, 5]).unwrap().attribution,
        inspected.attribution(29)
    );
}

/// Attention rollout: the product, from the last layer down, of ½·(mean-of-heads attention) + ½·I,
/// here formed from whole attention matrices (HF's numbers, see above) and read at the pixel's row.
#[test]
fn rollout_is_the_product_of_the_layers_averaged_attention_and_identity() {
    let stored = fixture();
    let input = expected().model_input.swap_remove(1);
    let t = input.len();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [1, t]), &Default::default());
    let trace = stored.model.forward_with(ids, traced_options());
    // [t, t] per layer: ½·mean over heads + ½·I.
    let mixed: Vec<Tensor<B, 2>> = (0..2)
        .map(|l| {
            let mean = trace.attention_weights(l).mean_dim(1).reshape([t, t]);
            mean * 0.5 + Tensor::<B, 2>::eye(t, &Default::default()) * 0.5
        })
        .collect();
    let product = floats(mixed[1].clone().matmul(mixed[0].clone()));
    let image: Vec<u16> = expected().input_ids[1].iter().map(|&i| i as u16).collect();
    let inspected = Inspected::new(&stored.model, &image, 8).unwrap();
    for pixel in [0, 9, 29, 63] {
        let rollout = inspected.rollout(pixel);
        assert_eq!(rollout.len(), pixel + 1);
        assert!((rollout.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let want = &product[pixel * t..pixel * t + pixel + 1];
        let diff = max_abs_diff(&rollout, want);
        assert!(diff < 1e-5, "pixel {pixel}: {diff} off the matrix product");
    }
}
