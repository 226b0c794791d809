//! Intel AMX from stable Rust: gemm_amx.c's bf16 tile kernel through `asm!`, with the same packing
//! (AVX-512 BF16's conversion for A, which is stable), checked against f64 sums.
use std::arch::asm;
use std::arch::x86_64::*;
use std::time::Instant;

/// AMX-TILE and AMX-BF16 (CPUID leaf 7, EDX bits 24 and 22), and the kernel's grant of tile data.
fn amx_ready() -> bool {
    let leaf = __cpuid_count(7, 0);
    let has = leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 22) != 0;
    // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA.
    has && unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) } == 0
}

#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    /// Palette 1, tiles 0..8 of 16 rows x 64 bytes.
    fn full() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

#[target_feature(enable = "avx512bf16,avx512f")]
fn pack_a(a: &[f32], out: &mut [u16]) {
    for (src, dst) in a.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr());
            let hi = _mm512_loadu_ps(src.as_ptr().add(16));
            let v = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                dst.as_mut_ptr().cast(),
                std::mem::transmute::<__m512bh, __m512i>(v),
            );
        }
    }
}

/// The `len` elements of `v` from its first 64-byte boundary (`v` holds 64 bytes to spare).
fn aligned<T>(v: &mut [T], len: usize) -> &mut [T] {
    let skip = v.as_ptr().align_offset(64);
    &mut v[skip..skip + len]
}

fn bf16(x: f32) -> u16 {
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// B `[k, n]` to `[n / 16][k / 2][16][2]`: each 16-column panel's rows in pairs, as TDPBF16PS reads.
fn pack_b(b: &[f32], out: &mut [u16], k: usize, n: usize) {
    for jb in 0..n / 16 {
        for k2 in 0..k / 2 {
            for j in 0..16 {
                for p in 0..2 {
                    out[((jb * (k / 2) + k2) * 16 + j) * 2 + p] =
                        bf16(b[(2 * k2 + p) * n + jb * 16 + j]);
                }
            }
        }
    }
}

/// C `[m, n]` = A · B from the packed operands; m and n multiples of 32, k of 32.
unsafe fn kernel(a: &[u16], b: &[u16], c: &mut [f32], m: usize, k: usize, n: usize) {
    let cfg = TileConfig::full();
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
        let (sa, sb, sc) = (k * 2, 64usize, n * 4);
        for i in (0..m).step_by(32) {
            for j in (0..n).step_by(32) {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack)
                );
                for kk in (0..k).step_by(32) {
                    let a0 = a.as_ptr().add(i * k + kk);
                    let a1 = a.as_ptr().add((i + 16) * k + kk);
                    let b0 = b.as_ptr().add(((j / 16) * (k / 2) + kk / 2) * 32);
                    let b1 = b.as_ptr().add(((j / 16 + 1) * (k / 2) + kk / 2) * 32);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1,
                        sa = in(reg) sa, sb = in(reg) sb, options(nostack),
                    );
                }
                let c0 = c.as_mut_ptr().add(i * n + j);
                let c2 = c.as_mut_ptr().add((i + 16) * n + j);
                asm!(
                    "tilestored [{c0} + {sc}*1], tmm0",
                    "tilestored [{c1} + {sc}*1], tmm1",
                    "tilestored [{c2} + {sc}*1], tmm2",
                    "tilestored [{c3} + {sc}*1], tmm3",
                    c0 = in(reg) c0, c1 = in(reg) c0.add(16), c2 = in(reg) c2, c3 = in(reg) c2.add(16),
                    sc = in(reg) sc, options(nostack),
                );
            }
        }
        asm!("tilerelease", options(nostack));
    }
}

fn main() {
    if !amx_ready() {
        println!("no AMX-BF16 here (or the kernel refused the tiles)");
        return;
    }
    for &(m, k, n) in &[
        (12544usize, 128usize, 384usize),
        (12544, 128, 512),
        (12544, 512, 128),
        (12544, 128, 128),
    ] {
        let mut seed = 1u64;
        let mut rand = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let a: Vec<f32> = (0..m * k).map(|_| rand()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rand()).collect();
        // Tile rows of 64 bytes start on cache lines, as gemm_amx.c's aligned_alloc gives them: a
        // Vec's own alignment (2 or 4 bytes) would split every row across two lines.
        let (mut ap_store, mut bp_store, mut c_store) = (
            vec![0u16; m * k + 32],
            vec![0u16; k * n + 32],
            vec![0f32; m * n + 16],
        );
        let (ap, bp, c) = (
            aligned(&mut ap_store, m * k),
            aligned(&mut bp_store, k * n),
            aligned(&mut c_store, m * n),
        );
        let (mut best, mut best_kernel) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            let t0 = Instant::now();
            unsafe { pack_a(&a, ap) };
            pack_b(&b, bp, k, n);
            let t1 = Instant::now();
            unsafe { kernel(ap, bp, c, m, k, n) };
            best = best.min(t0.elapsed().as_secs_f64());
            best_kernel = best_kernel.min(t1.elapsed().as_secs_f64());
        }
        let mut err = 0f64;
        for t in 0..64 {
            let (i, j) = ((t * 7919) % m, (t * 104729) % n);
            let want: f64 = (0..k)
                .map(|q| a[i * k + q] as f64 * b[q * n + j] as f64)
                .sum();
            err = err.max((want - c[i * n + j] as f64).abs());
        }
        let flop = 2.0 * (m * k * n) as f64;
        println!(
            "AMX bf16 (Rust asm!) m={m} k={k} n={n}: {:.2} ms with packing ({:.0} GFLOP/s), kernel {:.2} ms ({:.0} GFLOP/s); max error {err:.1e}",
            best * 1e3,
            flop / best / 1e9,
            best_kernel * 1e3,
            flop / best_kernel / 1e9
        );
    }
}
