//! Attention on the CPU, causal or not, computed in tiles as FlashAttention-2 does (Dao 2023), on f32
//! buffers.
//!
//! The forward pass never holds more than one `QUERY_TILE × KEY_TILE` block of scores: it keeps a
//! running maximum and sum per query (online softmax) and returns the output plus each query's
//! log-sum-exp. The backward pass recomputes the probabilities block by block from that log-sum-exp,
//! so training stores O(t) per head instead of the O(t²) probabilities. With the causal mask, blocks
//! wholly above the diagonal are skipped in both passes; without it (the BERT objective) every query
//! sees every key. Work is spread with rayon over sequences (and query blocks in
//! the forward pass); the block products use the `gemm` crate (runtime-dispatched SIMD, the kernel
//! burn-flex's matmul uses) and the softmax's element-wise steps are compiled per SIMD level
//! (`crate::kernels::simd`).
//!
//! Inputs are strided views ([`Strided`]), so q, k and v are read where the model left them (thirds
//! of the fused qkv projection, or the KV cache) without copies. Outputs and gradients are
//! token-major, `[batch, seq, heads, head_dim]`: exactly the `[batch, seq, width]` the next
//! projection wants. Queries are the last `queries` positions of a `keys`-long sequence (the causal
//! mask is aligned bottom-right, so a cached step's query sees every earlier key). The optional
//! additive `key_bias` (`[batch, keys]`, HF's padding mask) is a constant: it gets no gradient.

use crate::kernels::par::*;
use crate::kernels::simd;

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
    /// Whether query `i` sees only keys up to its own position (bottom-right aligned); else all keys.
    pub causal: bool,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// How many more keys than queries there are: query `i` sees keys `0..=i + offset`.
    fn offset(&self) -> usize {
        self.keys - self.queries
    }

    fn check(&self) {
        assert!(
            self.queries <= self.keys,
            "more queries than keys: {self:?}"
        );
        assert!(
            self.head_dim > 0 && self.queries > 0 && self.heads > 0,
            "empty attention: {self:?}"
        );
    }
}

/// A `[batch, heads, seq, head_dim]` tensor in a buffer: element `(b, h, i, c)` is at
/// `offset + b·batch + h·head + i·row + c` (the last dimension is contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub offset: usize,
    pub batch: usize,
    pub head: usize,
    pub row: usize,
}

impl Strides {
    /// Contiguous `[batch, heads, seq, head_dim]`.
    pub fn heads_major(heads: usize, seq: usize, head_dim: usize) -> Self {
        Strides {
            offset: 0,
            batch: heads * seq * head_dim,
            head: seq * head_dim,
            row: head_dim,
        }
    }

    /// Contiguous `[batch, seq, heads, head_dim]`: how this module writes outputs and gradients.
    pub fn token_major(heads: usize, seq: usize, head_dim: usize) -> Self {
        Strides {
            offset: 0,
            batch: seq * heads * head_dim,
            head: head_dim,
            row: heads * head_dim,
        }
    }
}

/// A strided `[batch, heads, seq, head_dim]` view of a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub strides: Strides,
}

impl<'a> Strided<'a> {
    pub fn new(data: &'a [f32], strides: Strides) -> Self {
        Strided { data, strides }
    }

    /// One (batch, head)'s `seq × head_dim` matrix; panics if any of it lies outside the buffer.
    fn matrix(&self, batch: usize, head: usize, seq: usize, head_dim: usize) -> MatRef<'a> {
        let s = self.strides;
        let start = s.offset + batch * s.batch + head * s.head;
        assert!(start <= self.data.len(), "attention input out of bounds");
        MatRef::new(&self.data[start..], seq, head_dim, s.row)
    }
}

/// What the forward pass returns.
pub struct Forward {
    /// `[batch, queries, heads, head_dim]`.
    pub output: Vec<f32>,
    /// `[batch, queries, heads]`: log Σ exp(score) per query and head, all the backward pass needs
    /// of the softmax.
    pub log_sum_exp: Vec<f32>,
}

/// softmax(scale · q kᵀ + key_bias + causal mask) v, the mask only if `dims.causal`.
pub fn forward(
    q: Strided<'_>,
    k: Strided<'_>,
    v: Strided<'_>,
    key_bias: Option<&[f32]>,
    dims: Dims,
    scale: f32,
) -> Forward {
    dims.check();
    let (heads, width) = (dims.heads, dims.width());
    let mut output = vec![0.0; dims.batch * dims.queries * width];
    let mut log_sum_exp = vec![0.0; dims.batch * dims.queries * heads];
    output
        .par_chunks_mut(dims.queries * width)
        .zip(log_sum_exp.par_chunks_mut(dims.queries * heads))
        .enumerate()
        .for_each(|(batch, (out, lse))| {
            let per_head: Vec<Head> = (0..heads)
                .map(|h| Head::new(q, k, v, key_bias, dims, batch, h))
                .collect();
            // Query blocks are independent: split them too, so a single sequence uses every core.
            out.par_chunks_mut(QUERY_TILE * width)
                .zip(lse.par_chunks_mut(QUERY_TILE * heads))
                .enumerate()
                .for_each_init(
                    || vec![0.0; QUERY_TILE * KEY_TILE],
                    |scores, (block, (out, lse))| {
                        for (h, head) in per_head.iter().enumerate() {
                            head.forward_block(block * QUERY_TILE, out, lse, h, scale, scores);
                        }
                    },
                );
        });
    Forward {
        output,
        log_sum_exp,
    }
}

/// Gradients of [`forward`]'s output with respect to q, k and v, token-major
/// (`[batch, seq, heads, head_dim]`).
pub struct Gradients {
    pub query: Vec<f32>,
    pub key: Vec<f32>,
    pub value: Vec<f32>,
}

/// The backward pass, from [`forward`]'s `output` and `log_sum_exp` for the same inputs;
/// `grad_output` is the gradient of the loss with respect to that output (any layout).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: Strided<'_>,
    k: Strided<'_>,
    v: Strided<'_>,
    key_bias: Option<&[f32]>,
    output: &[f32],
    log_sum_exp: &[f32],
    grad_output: Strided<'_>,
    dims: Dims,
    scale: f32,
) -> Gradients {
    dims.check();
    let (tq, tk, width) = (dims.queries, dims.keys, dims.width());
    assert_eq!(output.len(), dims.batch * tq * width, "output size");
    assert_eq!(
        log_sum_exp.len(),
        dims.batch * tq * dims.heads,
        "log-sum-exp size"
    );
    let output = Strided::new(output, Strides::token_major(dims.heads, tq, dims.head_dim));
    let mut grads = Gradients {
        query: vec![0.0; dims.batch * tq * width],
        key: vec![0.0; dims.batch * tk * width],
        value: vec![0.0; dims.batch * tk * width],
    };
    grads
        .query
        .par_chunks_mut(tq * width)
        .zip(grads.key.par_chunks_mut(tk * width))
        .zip(grads.value.par_chunks_mut(tk * width))
        .enumerate()
        .for_each(|(batch, ((dq, dk), dv))| {
            let mut scratch = BackwardScratch::new();
            for h in 0..dims.heads {
                let head = Head::new(q, k, v, key_bias, dims, batch, h);
                let lse = &log_sum_exp[batch * tq * dims.heads..][..tq * dims.heads];
                let column = h * dims.head_dim;
                head.backward(
                    output.matrix(batch, h, tq, dims.head_dim),
                    Column::new(lse, h, dims.heads),
                    grad_output.matrix(batch, h, tq, dims.head_dim),
                    HeadGrads {
                        dq: MatMut::new(&mut dq[column..], tq, dims.head_dim, width),
                        dk: MatMut::new(&mut dk[column..], tk, dims.head_dim, width),
                        dv: MatMut::new(&mut dv[column..], tk, dims.head_dim, width),
                    },
                    scale,
                    &mut scratch,
                );
            }
        });
    grads
}

/// One (batch, head) pair's matrices.
struct Head<'a> {
    q: MatRef<'a>,
    k: MatRef<'a>,
    v: MatRef<'a>,
    key_bias: Option<&'a [f32]>,
    dims: Dims,
}

/// One pair's gradient matrices, written by [`Head::backward`].
struct HeadGrads<'a> {
    dq: MatMut<'a>,
    dk: MatMut<'a>,
    dv: MatMut<'a>,
}

/// One column of a row-major `[rows, stride]` buffer (a head's log-sum-exp in `[seq, heads]`).
struct Column<'a> {
    data: &'a [f32],
    column: usize,
    stride: usize,
}

impl<'a> Column<'a> {
    fn new(data: &'a [f32], column: usize, stride: usize) -> Self {
        Column {
            data,
            column,
            stride,
        }
    }

    fn get(&self, row: usize) -> f32 {
        self.data[row * self.stride + self.column]
    }
}

/// The backward pass's block buffers, reused across heads.
struct BackwardScratch {
    probs: Vec<f32>,
    grad_scores: Vec<f32>,
    dot: Vec<f32>,
}

impl BackwardScratch {
    fn new() -> Self {
        BackwardScratch {
            probs: vec![0.0; QUERY_TILE * KEY_TILE],
            grad_scores: vec![0.0; QUERY_TILE * KEY_TILE],
            dot: Vec::new(),
        }
    }
}

impl<'a> Head<'a> {
    fn new(
        q: Strided<'a>,
        k: Strided<'a>,
        v: Strided<'a>,
        key_bias: Option<&'a [f32]>,
        dims: Dims,
        batch: usize,
        head: usize,
    ) -> Self {
        let (tq, tk, hd) = (dims.queries, dims.keys, dims.head_dim);
        Head {
            q: q.matrix(batch, head, tq, hd),
            k: k.matrix(batch, head, tk, hd),
            v: v.matrix(batch, head, tk, hd),
            key_bias: key_bias.map(|b| &b[batch * tk..(batch + 1) * tk]),
            dims,
        }
    }

    /// Keys `0..visible_keys(i)` are visible to query `i`.
    fn visible_keys(&self, query: usize) -> usize {
        if self.dims.causal {
            query + self.dims.offset() + 1
        } else {
            self.dims.keys
        }
    }

    /// The first query that sees key `key` (every query, without the causal mask).
    fn first_query_seeing(&self, key: usize) -> usize {
        if self.dims.causal {
            key.saturating_sub(self.dims.offset())
        } else {
            0
        }
    }

    /// Visible keys of the block `first_key..first_key + cols` for query `query`.
    fn visible_in_block(&self, query: usize, first_key: usize, cols: usize) -> usize {
        self.visible_keys(query).saturating_sub(first_key).min(cols)
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
        matmul(
            MatMut::new(scores, rows, cols, cols),
            self.q.block(first_query, rows),
            self.k.block(first_key, cols).t(),
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

    /// Output rows and log-sum-exp of this head for the queries of one block: `out` holds the
    /// block's token-major rows (every head), `lse` its `[rows, heads]` log-sum-exps.
    fn forward_block(
        &self,
        first_query: usize,
        out: &mut [f32],
        lse: &mut [f32],
        head: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let (hd, heads) = (self.dims.head_dim, self.dims.heads);
        let width = hd * heads;
        let rows = lse.len() / heads;
        let column = head * hd;
        let out_row = |r: usize| r * width + column..r * width + column + hd;
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
                    simd::scale(&mut out[out_row(r)], correction);
                }
                sum[r] = sum[r] * correction + block_sum;
                max[r] = new_max;
            }
            matmul(
                MatMut::new(&mut out[column..], rows, hd, width),
                MatRef::new(&scores[..rows * cols], rows, cols, cols),
                self.v.block(first_key, cols),
                true,
                1.0,
            );
        }
        for r in 0..rows {
            simd::scale(&mut out[out_row(r)], 1.0 / sum[r]);
            lse[r * heads + head] = max[r] + sum[r].ln();
        }
    }

    /// FlashAttention-2's backward pass for one head: key blocks outer, the query blocks that see them
    /// inner, probabilities recomputed from the log-sum-exp.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        out: MatRef<'_>,
        lse: Column<'_>,
        grad_out: MatRef<'_>,
        grads: HeadGrads<'_>,
        scale: f32,
        scratch: &mut BackwardScratch,
    ) {
        let (tq, tk) = (self.dims.queries, self.dims.keys);
        let HeadGrads {
            mut dq,
            mut dk,
            mut dv,
        } = grads;
        // D_i = dO_i · O_i: the softmax Jacobian's correction term, one number per query.
        scratch.dot.clear();
        scratch
            .dot
            .extend((0..tq).map(|i| simd::dot(grad_out.row(i), out.row(i))));
        for first_key in (0..tk).step_by(KEY_TILE) {
            let cols = KEY_TILE.min(tk - first_key);
            // The first query that sees this block's first key, rounded down to a block start.
            let first_row = self.first_query_seeing(first_key) / QUERY_TILE * QUERY_TILE;
            for first_query in (first_row..tq).step_by(QUERY_TILE) {
                let rows = QUERY_TILE.min(tq - first_query);
                let p = &mut scratch.probs[..rows * cols];
                let ds = &mut scratch.grad_scores[..rows * cols];
                self.scores(first_query, rows, first_key, cols, scale, p);
                for r in 0..rows {
                    let row = &mut p[r * cols..(r + 1) * cols];
                    let visible = self.visible_in_block(first_query + r, first_key, cols);
                    simd::exp_sub(&mut row[..visible], lse.get(first_query + r));
                    row[visible..].fill(0.0);
                }
                let p = MatRef::new(p, rows, cols, cols);
                let g_rows = grad_out.block(first_query, rows);
                // dV += Pᵀ dO
                matmul(dv.block(first_key, cols), p.t(), g_rows, true, 1.0);
                // dP = dO Vᵀ, then dS = P ∘ (dP − D) in place
                matmul(
                    MatMut::new(ds, rows, cols, cols),
                    g_rows,
                    self.v.block(first_key, cols).t(),
                    false,
                    1.0,
                );
                for r in 0..rows {
                    let span = r * cols..(r + 1) * cols;
                    let dot = scratch.dot[first_query + r];
                    simd::softmax_grad(&mut ds[span.clone()], &p.data[span], dot);
                }
                let ds = MatRef::new(ds, rows, cols, cols);
                // dQ += scale · dS K, dK += scale · dSᵀ Q
                matmul(
                    dq.block(first_query, rows),
                    ds,
                    self.k.block(first_key, cols),
                    true,
                    scale,
                );
                matmul(
                    dk.block(first_key, cols),
                    ds.t(),
                    self.q.block(first_query, rows),
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
    /// `rows × cols` elements of `data`, `row_stride` apart, each row contiguous.
    fn new(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        let m = MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        };
        m.check_bounds();
        m
    }

    /// Rows `first..first + count` of a row-major view.
    fn block(&self, first: usize, count: usize) -> MatRef<'a> {
        debug_assert_eq!(self.col_stride, 1);
        assert!(first + count <= self.rows, "rows out of range");
        MatRef::new(
            &self.data[(first * self.row_stride).min(self.data.len())..],
            count,
            self.cols,
            self.row_stride,
        )
    }

    /// Row `i` of a row-major view.
    fn row(&self, i: usize) -> &'a [f32] {
        debug_assert_eq!(self.col_stride, 1);
        &self.data[i * self.row_stride..i * self.row_stride + self.cols]
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

/// A writable strided matrix view, each row contiguous.
struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> MatMut<'a> {
    fn new(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        if rows > 0 && cols > 0 {
            assert!(
                (rows - 1) * row_stride + cols <= data.len(),
                "matrix view out of bounds"
            );
        }
        MatMut {
            data,
            rows,
            cols,
            row_stride,
        }
    }

    /// Rows `first..first + count`.
    fn block(&mut self, first: usize, count: usize) -> MatMut<'_> {
        assert!(first + count <= self.rows, "rows out of range");
        let start = (first * self.row_stride).min(self.data.len());
        MatMut::new(&mut self.data[start..], count, self.cols, self.row_stride)
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
            dst.row_stride as isize,
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
