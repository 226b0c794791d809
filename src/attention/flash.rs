//! Causal attention on the CPU, computed in tiles as FlashAttention-2 does (Dao 2023), for f32 slices.
//!
//! The forward pass never holds more than one `QUERY_TILE × KEY_TILE` block of scores: it keeps a
//! running maximum and sum per query (online softmax) and returns the output plus each query's
//! log-sum-exp. The backward pass recomputes the probabilities block by block from that log-sum-exp,
//! so training stores O(t) per head instead of the O(t²) probabilities. Blocks wholly above the causal
//! diagonal are skipped in both passes. Work is spread over (batch, head) pairs (and query blocks in
//! the forward pass) with rayon; the block products use the `gemm` crate (runtime-dispatched SIMD, the
//! kernel burn-flex's matmul uses) and the element-wise softmax steps are compiled for AVX-512, AVX2
//! and NEON and picked at run time (`multiversion`).
//!
//! Layout: `q`, `k`, `v` and the output are contiguous `[batch, heads, seq, head_dim]`; queries are
//! the last `queries` positions of a `keys`-long sequence (causal mask aligned bottom-right, so a
//! cached step's query sees every earlier key). The optional additive `key_bias` (`[batch, keys]`,
//! the padding mask of HF checkpoints) is a constant: it gets no gradient.

use rayon::prelude::*;

use super::simd;

/// Queries per block: the rows of one block product.
const QUERY_TILE: usize = 64;
/// Keys per block: the score block `QUERY_TILE × KEY_TILE` (16 KiB) stays in L1/L2 with its K and V rows.
const KEY_TILE: usize = 64;

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub heads: usize,
    /// Query positions: the last `queries` of the `keys` positions.
    pub queries: usize,
    pub keys: usize,
    pub head_dim: usize,
}

impl Dims {
    fn pairs(&self) -> usize {
        self.batch * self.heads
    }

    /// How many more keys than queries there are: query `i` sees keys `0..=i + offset`.
    fn offset(&self) -> usize {
        self.keys - self.queries
    }

    fn check(&self, q: &[f32], k: &[f32], v: &[f32], key_bias: Option<&[f32]>) {
        assert!(
            self.queries <= self.keys,
            "more queries than keys: {self:?}"
        );
        assert!(
            self.head_dim > 0 && self.queries > 0,
            "empty attention: {self:?}"
        );
        assert_eq!(
            q.len(),
            self.pairs() * self.queries * self.head_dim,
            "query size"
        );
        assert_eq!(
            k.len(),
            self.pairs() * self.keys * self.head_dim,
            "key size"
        );
        assert_eq!(v.len(), k.len(), "value size");
        if let Some(bias) = key_bias {
            assert_eq!(bias.len(), self.batch * self.keys, "key bias size");
        }
    }
}

/// What the forward pass returns.
pub struct Forward {
    /// `[batch, heads, queries, head_dim]`.
    pub output: Vec<f32>,
    /// `[batch, heads, queries]`: log Σ exp(score) per query, all the backward pass needs of the softmax.
    pub log_sum_exp: Vec<f32>,
}

/// softmax(scale · q kᵀ + key_bias + causal mask) v.
pub fn forward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_bias: Option<&[f32]>,
    dims: Dims,
    scale: f32,
) -> Forward {
    dims.check(q, k, v, key_bias);
    let (queries, hd) = (dims.queries, dims.head_dim);
    let mut output = vec![0.0; q.len()];
    let mut log_sum_exp = vec![0.0; dims.pairs() * queries];
    output
        .par_chunks_mut(queries * hd)
        .zip(log_sum_exp.par_chunks_mut(queries))
        .enumerate()
        .for_each(|(pair, (out, lse))| {
            let head = Head::new(q, k, v, key_bias, dims, pair);
            // Query blocks are independent: split them too, so a single sequence uses every core.
            out.par_chunks_mut(QUERY_TILE * hd)
                .zip(lse.par_chunks_mut(QUERY_TILE))
                .enumerate()
                .for_each_init(
                    || vec![0.0; QUERY_TILE * KEY_TILE],
                    |scores, (block, (out, lse))| {
                        head.forward_block(block * QUERY_TILE, out, lse, scale, scores)
                    },
                );
        });
    Forward {
        output,
        log_sum_exp,
    }
}

/// Gradients of [`forward`]'s output with respect to `q`, `k` and `v`.
pub struct Gradients {
    pub query: Vec<f32>,
    pub key: Vec<f32>,
    pub value: Vec<f32>,
}

/// The backward pass, from [`forward`]'s `output` and `log_sum_exp` for the same inputs;
/// `grad_output` is the gradient of the loss with respect to that output.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_bias: Option<&[f32]>,
    output: &[f32],
    log_sum_exp: &[f32],
    grad_output: &[f32],
    dims: Dims,
    scale: f32,
) -> Gradients {
    dims.check(q, k, v, key_bias);
    assert_eq!(grad_output.len(), q.len(), "output gradient size");
    assert_eq!(output.len(), q.len(), "output size");
    assert_eq!(
        log_sum_exp.len(),
        dims.pairs() * dims.queries,
        "log-sum-exp size"
    );
    let (tq, tk, hd) = (dims.queries, dims.keys, dims.head_dim);
    let mut grads = Gradients {
        query: vec![0.0; q.len()],
        key: vec![0.0; k.len()],
        value: vec![0.0; v.len()],
    };
    grads
        .query
        .par_chunks_mut(tq * hd)
        .zip(grads.key.par_chunks_mut(tk * hd))
        .zip(grads.value.par_chunks_mut(tk * hd))
        .enumerate()
        .for_each(|(pair, ((dq, dk), dv))| {
            let head = Head::new(q, k, v, key_bias, dims, pair);
            let rows = pair * tq..(pair + 1) * tq;
            head.backward(
                &output[rows.start * hd..rows.end * hd],
                &log_sum_exp[rows.clone()],
                &grad_output[rows.start * hd..rows.end * hd],
                HeadGrads { dq, dk, dv },
                scale,
            );
        });
    grads
}

/// One (batch, head) pair's slices.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    key_bias: Option<&'a [f32]>,
    dims: Dims,
}

/// One pair's gradient slices, written by [`Head::backward`].
struct HeadGrads<'a> {
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

impl<'a> Head<'a> {
    fn new(
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
        key_bias: Option<&'a [f32]>,
        dims: Dims,
        pair: usize,
    ) -> Self {
        let (tq, tk, hd) = (dims.queries, dims.keys, dims.head_dim);
        let batch = pair / dims.heads;
        Head {
            q: &q[pair * tq * hd..(pair + 1) * tq * hd],
            k: &k[pair * tk * hd..(pair + 1) * tk * hd],
            v: &v[pair * tk * hd..(pair + 1) * tk * hd],
            key_bias: key_bias.map(|b| &b[batch * tk..(batch + 1) * tk]),
            dims,
        }
    }

    /// Keys `0..visible_keys(i)` are visible to query `i`.
    fn visible_keys(&self, query: usize) -> usize {
        query + self.dims.offset() + 1
    }

    /// `scores[r][c] = scale · q[first_query + r] · k[first_key + c]` plus the key bias, for `rows`
    /// queries and `cols` keys. Entries above the causal diagonal are computed too: callers mask them.
    fn scores(
        &self,
        first_query: usize,
        rows: usize,
        first_key: usize,
        cols: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let hd = self.dims.head_dim;
        matmul(
            MatMut::rows(scores, rows, cols),
            MatRef::rows(&self.q[first_query * hd..], rows, hd),
            MatRef::rows(&self.k[first_key * hd..], cols, hd).t(),
            false,
            scale,
        );
        if let Some(bias) = self.key_bias {
            let bias = &bias[first_key..first_key + cols];
            for row in scores[..rows * cols].chunks_exact_mut(cols) {
                simd::add(row, bias);
            }
        }
    }

    /// Visible keys of the block `first_key..first_key + cols` for query `query`.
    fn visible_in_block(&self, query: usize, first_key: usize, cols: usize) -> usize {
        self.visible_keys(query).saturating_sub(first_key).min(cols)
    }

    /// Output rows and log-sum-exp of the queries `first_query..first_query + out.len() / head_dim`.
    fn forward_block(
        &self,
        first_query: usize,
        out: &mut [f32],
        lse: &mut [f32],
        scale: f32,
        scores: &mut [f32],
    ) {
        let hd = self.dims.head_dim;
        let rows = lse.len();
        // Keys any row of this block sees; blocks past them are above the diagonal and skipped.
        let keys = self.visible_keys(first_query + rows - 1);
        let mut max = [f32::NEG_INFINITY; QUERY_TILE];
        let mut sum = [0.0f32; QUERY_TILE];
        for first_key in (0..keys).step_by(KEY_TILE) {
            let cols = KEY_TILE.min(keys - first_key);
            self.scores(first_query, rows, first_key, cols, scale, scores);
            for r in 0..rows {
                let row = &mut scores[r * cols..(r + 1) * cols];
                let visible = self.visible_in_block(first_query + r, first_key, cols);
                row[visible..].fill(0.0);
                if visible == 0 {
                    continue;
                }
                let row = &mut row[..visible];
                let new_max = max[r].max(simd::max(row));
                let block_sum = simd::exp_sub(row, new_max);
                // Rescale what was accumulated under the old maximum (exp(-inf) = 0 the first time).
                let correction = (max[r] - new_max).exp();
                if correction != 1.0 {
                    simd::scale(&mut out[r * hd..(r + 1) * hd], correction);
                }
                sum[r] = sum[r] * correction + block_sum;
                max[r] = new_max;
            }
            matmul(
                MatMut::rows(out, rows, hd),
                MatRef::rows(&scores[..rows * cols], rows, cols),
                MatRef::rows(&self.v[first_key * hd..], cols, hd),
                true,
                1.0,
            );
        }
        for r in 0..rows {
            simd::scale(&mut out[r * hd..(r + 1) * hd], 1.0 / sum[r]);
            lse[r] = max[r] + sum[r].ln();
        }
    }

    /// FlashAttention-2's backward pass for one head: key blocks outer, the query blocks that see them
    /// inner, probabilities recomputed from the log-sum-exp.
    fn backward(
        &self,
        out: &[f32],
        lse: &[f32],
        grad_out: &[f32],
        grads: HeadGrads<'_>,
        scale: f32,
    ) {
        let Dims {
            queries: tq,
            keys: tk,
            head_dim: hd,
            ..
        } = self.dims;
        let HeadGrads { dq, dk, dv } = grads;
        // D_i = dO_i · O_i: the softmax Jacobian's correction term, one number per query.
        let dot: Vec<f32> = grad_out
            .chunks_exact(hd)
            .zip(out.chunks_exact(hd))
            .map(|(g, o)| simd::dot(g, o))
            .collect();
        let mut probs = vec![0.0; QUERY_TILE * KEY_TILE];
        let mut grad_scores = vec![0.0; QUERY_TILE * KEY_TILE];
        for first_key in (0..tk).step_by(KEY_TILE) {
            let cols = KEY_TILE.min(tk - first_key);
            // The first query that sees this block's first key, rounded down to a block start.
            let first_row = first_key.saturating_sub(self.dims.offset()) / QUERY_TILE * QUERY_TILE;
            for first_query in (first_row..tq).step_by(QUERY_TILE) {
                let rows = QUERY_TILE.min(tq - first_query);
                let (p, ds) = (&mut probs[..rows * cols], &mut grad_scores[..rows * cols]);
                self.scores(first_query, rows, first_key, cols, scale, p);
                for r in 0..rows {
                    let row = &mut p[r * cols..(r + 1) * cols];
                    let visible = self.visible_in_block(first_query + r, first_key, cols);
                    simd::exp_sub(&mut row[..visible], lse[first_query + r]);
                    row[visible..].fill(0.0);
                }
                let g_rows = &grad_out[first_query * hd..(first_query + rows) * hd];
                // dV += Pᵀ dO
                matmul(
                    MatMut::rows(&mut dv[first_key * hd..], cols, hd),
                    MatRef::rows(p, rows, cols).t(),
                    MatRef::rows(g_rows, rows, hd),
                    true,
                    1.0,
                );
                // dP = dO Vᵀ, then dS = P ∘ (dP − D) in place
                matmul(
                    MatMut::rows(ds, rows, cols),
                    MatRef::rows(g_rows, rows, hd),
                    MatRef::rows(&self.v[first_key * hd..], cols, hd).t(),
                    false,
                    1.0,
                );
                for r in 0..rows {
                    let span = r * cols..(r + 1) * cols;
                    simd::softmax_grad(&mut ds[span.clone()], &p[span], dot[first_query + r]);
                }
                // dQ += scale · dS K, dK += scale · dSᵀ Q
                matmul(
                    MatMut::rows(&mut dq[first_query * hd..], rows, hd),
                    MatRef::rows(ds, rows, cols),
                    MatRef::rows(&self.k[first_key * hd..], cols, hd),
                    true,
                    scale,
                );
                matmul(
                    MatMut::rows(&mut dk[first_key * hd..], cols, hd),
                    MatRef::rows(ds, rows, cols).t(),
                    MatRef::rows(&self.q[first_query * hd..], rows, hd),
                    true,
                    scale,
                );
            }
        }
    }
}

/// A read-only strided matrix view.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// The first `rows × cols` elements of `data`, row-major.
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        let m = MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        };
        m.check_bounds();
        m
    }

    /// The transpose (a view; nothing moves).
    fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn check_bounds(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// A writable row-major matrix view.
struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatMut<'a> {
    fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert!(rows * cols <= data.len(), "matrix view out of bounds");
        MatMut { data, rows, cols }
    }
}

/// `dst = (accumulate ? dst : 0) + scale · lhs · rhs`, single-threaded (the callers run in parallel).
fn matmul(dst: MatMut<'_>, lhs: MatRef<'_>, rhs: MatRef<'_>, accumulate: bool, scale: f32) {
    assert!(lhs.rows == dst.rows && rhs.cols == dst.cols && lhs.cols == rhs.rows);
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    // SAFETY: the views' constructors checked that every element they address lies in their slices,
    // `dst` is borrowed mutably (no aliasing), and the shapes agree (asserted above).
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            lhs.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.cols as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
