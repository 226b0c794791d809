//! Matrix products on Intel AMX tiles: bf16 inputs, f32 sums, f32 out (mixed precision's products on
//! the CPU, see [`crate::Precision::Bf16`]).
//!
//! The operands are f32 matrices read through strides (so a transpose costs nothing), rounded to bf16
//! as they are packed into the layouts the tile instructions read: A `[m, k]` row-major, B `[k, n]`
//! as 16-column panels of row pairs. Both are padded with zeros to multiples of 32 and start on
//! 64-byte boundaries (a tile row that straddles two cache lines loads at half speed: `bench/amx`).
//! Each 32-row block of C is one rayon task: four 16 × 16 accumulator tiles over two A and two B
//! tiles per 32-wide slice of k. The tile instructions go through `asm!`, as Rust's AMX intrinsics
//! and their feature detection are nightly-only; `bench/amx` measured this kernel first.

use std::arch::asm;
use std::arch::x86_64::{
    __cpuid_count, __m512bh, __m512i, __mmask16, _mm512_cvtne2ps_pbh, _mm512_loadu_ps,
    _mm512_loadu_si512, _mm512_maskz_loadu_ps, _mm512_permutexvar_epi16, _mm512_setzero_ps,
    _mm512_storeu_si512,
};
use std::sync::OnceLock;

use rayon::prelude::*;

/// Rows and columns of C per task, and k per step: two tiles of 16 each way.
const BLOCK: usize = 32;

/// Whether this CPU has AMX-BF16 (and AVX-512 BF16 for the packing) and Linux granted this process
/// the tile registers. Asked once.
pub(crate) fn available() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        // CPUID leaf 7: AMX-TILE (EDX bit 24) and AMX-BF16 (bit 22).
        let leaf = __cpuid_count(7, 0);
        let tiles = leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 22) != 0;
        // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): without it the first tile
        // instruction is a fault.
        tiles
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512bf16")
            && unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1023, 18) } == 0
    })
}

/// An f32 matrix `[rows, cols]` in `data`: element (i, j) at `i * row_stride + j * col_stride`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Matrix<'a> {
    /// A row-major `[rows, cols]` matrix.
    #[cfg(test)]
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same elements, rows and columns swapped (no copy).
    pub fn transposed(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// `a · b` (`[m, k] · [k, n]`), row-major `[m, n]`, on the tiles. The caller checked [`available`].
pub(crate) fn matmul(a: Matrix, b: Matrix) -> Vec<f32> {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert!(available(), "the caller checks for AMX first");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (mp, kp, np) = (
        m.next_multiple_of(BLOCK),
        k.next_multiple_of(BLOCK),
        n.next_multiple_of(BLOCK),
    );
    let mut a_store = Aligned::<u16>::zeroed(mp * kp);
    pack_rows(a, kp, a_store.slice_mut());
    let mut b_store = Aligned::<u16>::zeroed(kp * np);
    pack_panels(b, kp, b_store.slice_mut());
    let (ap, bp) = (a_store.slice(), b_store.slice());
    if m == mp && n == np {
        // C's shape is the padded one: the tiles store straight into the result, every element
        // (so it need not be zeroed first: 19 MB of memset for the step's qkv product).
        let mut c = Box::<[f32]>::new_uninit_slice(m * n);
        c.par_chunks_mut(BLOCK * n)
            .enumerate()
            .for_each(|(block, rows)| unsafe {
                row_block(ap, bp, rows.as_mut_ptr().cast(), n, block * BLOCK, kp, np)
            });
        // SAFETY: `row_block` stored all 32 rows × np columns of each block.
        return unsafe { c.assume_init() }.into_vec();
    }
    let mut padded = vec![0f32; mp * np];
    padded
        .par_chunks_mut(BLOCK * np)
        .enumerate()
        .for_each(|(block, rows)| unsafe {
            row_block(ap, bp, rows.as_mut_ptr(), np, block * BLOCK, kp, np)
        });
    let mut c = Vec::with_capacity(m * n);
    for row in padded.chunks_exact(np).take(m) {
        c.extend_from_slice(&row[..n]);
    }
    c
}

/// A row-major `[mp, kp]` bf16 copy of `a`, zero beyond its `[m, k]`, 32 rows per task.
fn pack_rows(a: Matrix, kp: usize, out: &mut [u16]) {
    out.par_chunks_mut(BLOCK * kp)
        .enumerate()
        .for_each(|(block, rows)| {
            let first = block * BLOCK;
            let count = a.rows.saturating_sub(first).min(BLOCK);
            if a.col_stride == 1 {
                // Rows are contiguous: 32 at a time through AVX-512 BF16's conversion.
                for r in 0..count {
                    let start = (first + r) * a.row_stride;
                    let source = &a.data[start..start + a.cols];
                    convert_row(source, &mut rows[r * kp..r * kp + a.cols]);
                }
            } else if a.row_stride == 1 {
                // Columns are contiguous (a row-major matrix read transposed).
                // SAFETY: `available` found AVX-512 F and BF16.
                unsafe { pack_columns(a, first, count, kp, rows) };
            } else {
                for j in 0..a.cols {
                    for r in 0..count {
                        rows[r * kp + j] = bf16(a.at(first + r, j));
                    }
                }
            }
        });
}

/// Rows `first..first + count` (≤ 32) of `a` into `rows` (`kp` apart) when `a`'s columns are
/// contiguous: 32 columns at a time, each column's `count` floats converted in one go into a 32 × 32
/// block, which is then written out transposed (scalar conversions here took 12% of a bf16 step).
#[target_feature(enable = "avx512f,avx512bf16")]
fn pack_columns(a: Matrix, first: usize, count: usize, kp: usize, rows: &mut [u16]) {
    let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    let (low, high) = (lanes(count), lanes(count.saturating_sub(16)));
    let mut block = [[0u16; BLOCK]; BLOCK]; // [column][row]
    for q0 in (0..a.cols).step_by(BLOCK) {
        let width = (a.cols - q0).min(BLOCK);
        for (dq, converted) in block.iter_mut().enumerate().take(width) {
            let at = first + (q0 + dq) * a.col_stride;
            // SAFETY: the masks read only rows below `first + count` of column q0 + dq, in `a`.
            unsafe {
                let p = a.data.as_ptr().wrapping_add(at);
                let lo = _mm512_maskz_loadu_ps(low, p);
                let hi = _mm512_maskz_loadu_ps(high, p.wrapping_add(16));
                let v = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(converted.as_mut_ptr().cast(), v);
            }
        }
        for r in 0..count {
            let out = &mut rows[r * kp + q0..r * kp + q0 + width];
            for (dq, o) in out.iter_mut().enumerate() {
                *o = block[dq][r];
            }
        }
    }
}

/// `b` `[k, n]` as TDPBF16PS reads it: `[np / 16][kp / 2][16][2]`, each 16-column panel's rows in
/// pairs, zero beyond `[k, n]`; one panel per task.
fn pack_panels(b: Matrix, kp: usize, out: &mut [u16]) {
    out.par_chunks_mut(kp * 16)
        .enumerate()
        .for_each(|(panel, packed)| {
            let columns = panel * 16..(panel * 16 + 16).min(b.cols);
            if columns.is_empty() {
                return;
            }
            if b.col_stride == 1 {
                // SAFETY: `available` found AVX-512 F, BW and BF16.
                unsafe { pack_panel_rows(b, columns.start, columns.len(), packed) };
                return;
            }
            for q in 0..b.rows {
                let pair = (q / 2) * 32 + q % 2;
                for (c, j) in columns.clone().enumerate() {
                    packed[pair + 2 * c] = bf16(b.at(q, j));
                }
            }
        });
}

/// One panel of a row-major `b` (`width` ≤ 16 columns from `first`): each pair of rows loaded 16
/// floats at a time, converted together and interleaved into the pairs TDPBF16PS reads.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pack_panel_rows(b: Matrix, first: usize, width: usize, packed: &mut [u16]) {
    // Element j of the first row, then of the second, for each j: [0, 16, 1, 17, ...].
    let pairs: [u16; 32] = std::array::from_fn(|i| ((i % 2) * 16 + i / 2) as u16);
    let mask: __mmask16 = ((1u32 << width) - 1) as __mmask16;
    // SAFETY: the masked loads read only the panel's `width` columns of rows below `b.rows`, and
    // each store writes one 32-element pair row of `packed` (which holds kp / 2 of them).
    unsafe {
        let order = _mm512_loadu_si512(pairs.as_ptr().cast());
        let row = |q: usize| {
            if q < b.rows {
                _mm512_maskz_loadu_ps(mask, b.data.as_ptr().add(q * b.row_stride + first))
            } else {
                _mm512_setzero_ps()
            }
        };
        for q in (0..b.rows).step_by(2) {
            let both = _mm512_cvtne2ps_pbh(row(q + 1), row(q));
            let both = std::mem::transmute::<__m512bh, __m512i>(both);
            let interleaved = _mm512_permutexvar_epi16(order, both);
            _mm512_storeu_si512(packed.as_mut_ptr().add((q / 2) * 32).cast(), interleaved);
        }
    }
}

/// f32 to bf16, rounded to nearest even (what the AVX-512 conversion does).
fn bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

fn convert_row(source: &[f32], out: &mut [u16]) {
    let whole = source.len() / 32 * 32;
    // SAFETY: `available` found AVX-512 F and BF16.
    unsafe { convert_32s(&source[..whole], &mut out[..whole]) };
    for (o, &x) in out[whole..].iter_mut().zip(&source[whole..]) {
        *o = bf16(x);
    }
}

#[target_feature(enable = "avx512f,avx512bf16")]
fn convert_32s(source: &[f32], out: &mut [u16]) {
    for (src, dst) in source.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        // SAFETY: each chunk holds 32 elements: two 16-float loads, one 64-byte store.
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

/// The tile configuration: palette 1, tiles 0–7 of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
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

/// C's rows `first..first + 32` (at `c`, `c_stride` floats apart) from the packed A `[mp, kp]` and
/// B panels (`np` columns).
///
/// # Safety
/// [`available`] is true, `a` and `b` are packed by [`pack_rows`] and [`pack_panels`] with these
/// sizes, and `c` points to 32 writable rows of `np` floats, `c_stride` ≥ `np` apart.
unsafe fn row_block(
    a: &[u16],
    b: &[u16],
    c: *mut f32,
    c_stride: usize,
    first: usize,
    kp: usize,
    np: usize,
) {
    let config = TileConfig::full();
    let (sa, sb, sc) = (kp * 2, 64usize, c_stride * 4);
    // SAFETY: every address is inside the packed operands or `c` (the caller's sizes), and the
    // tiles are configured before use and released after.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack));
        for j in (0..np).step_by(BLOCK) {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack)
            );
            for kk in (0..kp).step_by(BLOCK) {
                let a0 = a.as_ptr().add(first * kp + kk);
                let a1 = a.as_ptr().add((first + 16) * kp + kk);
                let b0 = b.as_ptr().add(((j / 16) * (kp / 2) + kk / 2) * 32);
                let b1 = b.as_ptr().add(((j / 16 + 1) * (kp / 2) + kk / 2) * 32);
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
            let c0 = c.add(j);
            let c2 = c.add(16 * c_stride + j);
            asm!(
                "tilestored [{c0} + {sc}*1], tmm0",
                "tilestored [{c1} + {sc}*1], tmm1",
                "tilestored [{c2} + {sc}*1], tmm2",
                "tilestored [{c3} + {sc}*1], tmm3",
                c0 = in(reg) c0, c1 = in(reg) c0.add(16), c2 = in(reg) c2, c3 = in(reg) c2.add(16),
                sc = in(reg) sc, options(nostack),
            );
        }
        asm!("tilerelease", options(nostack));
    }
}

/// A zeroed buffer whose slice starts on a 64-byte boundary.
struct Aligned<T> {
    store: Vec<T>,
    skip: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    fn zeroed(len: usize) -> Self {
        let spare = 64 / std::mem::size_of::<T>();
        let store = vec![T::default(); len + spare];
        let skip = store.as_ptr().align_offset(64);
        Aligned { store, skip, len }
    }

    fn slice(&self) -> &[T] {
        &self.store[self.skip..self.skip + self.len]
    }

    fn slice_mut(&mut self) -> &mut [T] {
        &mut self.store[self.skip..self.skip + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// What the tiles compute: the bf16-rounded operands' products summed in f64.
    fn reference(a: Matrix, b: Matrix) -> Vec<f64> {
        let round = |x: f32| half::bf16::from_f32(x).to_f64();
        let mut c = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols)
                    .map(|q| round(a.at(i, q)) * round(b.at(q, j)))
                    .sum();
            }
        }
        c
    }

    /// Shapes the padding must cover (none a multiple of 32, one exactly), with each operand read
    /// row-major and through a transpose.
    #[test]
    fn tile_products_equal_the_rounded_operands_products() {
        let amx_cpu = {
            let leaf = __cpuid_count(7, 0);
            leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 22) != 0
        };
        // Where the CPU has the tiles, Linux grants them: the kernel must run here.
        assert_eq!(
            available(),
            amx_cpu && std::is_x86_feature_detected!("avx512bf16")
        );
        if !available() {
            return;
        }
        for (m, k, n) in [(37, 45, 19), (64, 32, 32), (5, 130, 70)] {
            let (a_data, b_data) = (numbers(m * k, 1), numbers(k * n, 2));
            let a = Matrix::row_major(&a_data, m, k);
            let b = Matrix::row_major(&b_data, k, n);
            // The same values stored transposed, read back through the strides.
            let a_t_data: Vec<f32> = (0..k)
                .flat_map(|q| (0..m).map(move |i| (i, q)))
                .map(|(i, q)| a.at(i, q))
                .collect();
            let b_t_data: Vec<f32> = (0..n)
                .flat_map(|j| (0..k).map(move |q| (q, j)))
                .map(|(q, j)| b.at(q, j))
                .collect();
            let a_t = Matrix::row_major(&a_t_data, k, m).transposed();
            let b_t = Matrix::row_major(&b_t_data, n, k).transposed();
            let want = reference(a, b);
            for (lhs, rhs) in [(a, b), (a_t, b), (a, b_t), (a_t, b_t)] {
                let got = matmul(lhs, rhs);
                assert_eq!(got.len(), m * n);
                for (g, w) in got.iter().zip(&want) {
                    // f32 sums of k exact bf16 products: a few f32 roundings each.
                    assert!((*g as f64 - w).abs() < 1e-5, "{m}x{k}x{n}: {g} against {w}");
                }
            }
        }
    }
}
