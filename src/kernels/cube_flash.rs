//! Fused causal attention for the CubeCL backends (wgpu natively, cuda): FlashAttention-2's
//! forward and backward, written once in CubeCL.
//!
//! One cube works on a block of rows of one (batch, head): a block of queries for the forward and
//! for dQ, a block of keys for dK and dV. Each unit owns one row and keeps it, its running
//! softmax and its accumulators in registers; the rows of the other side stream through shared
//! memory a tile at a time, so the `queries × keys` probabilities are never stored. The forward
//! keeps each query's log-sum-exp (`m + ln l`), from which the backward recomputes every
//! probability (FA-2's recomputation) instead of reading it back.
//!
//! A kernel is compiled per storage type and head-dimension class (the head dimension rounded up
//! to a power of two, at least 16) only: lengths, the head dimension itself, the causal mask and
//! the key bias are run-time values, so a growing KV cache (one more key every sampled token)
//! reuses one compiled kernel. Loops over a row's `width` lanes are unrolled, so each unit's rows
//! live in registers (a run-time index would put them in local memory); lanes past the head
//! dimension hold zeros.
//!
//! Everything computes in f32 whatever the storage type (f32, f16 or bf16), as the unfused path's
//! softmax does. The causal mask is bottom-right aligned: with `tq` queries and `tk ≥ tq` keys,
//! query `i` sees keys `0..=tk - tq + i`.

use burn::tensor::DType;
use burn_cubecl::CubeRuntime;
use burn_cubecl::cubecl;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// The largest head dimension the kernels take (each unit holds rows of it in registers).
pub(crate) const MAX_HEAD_DIM: usize = 256;

/// Up to this many queries (a sampled token is one), the forward splits each query's keys across a
/// cube's units ([`decode_kernel`]) instead of giving each query one unit that walks every key.
const DECODE_QUERIES: usize = 4;

/// The row length a kernel is compiled for: the head dimension rounded up to a power of two (at
/// least 16), so that a few compiled variants serve every model.
fn width(d: usize) -> usize {
    d.next_power_of_two().max(16)
}

/// Rows per cube for head dimension `d`: two tiles of `block × width` f32 and the forward's
/// `block × block` scores stay within 12 KiB of shared memory (WebGPU guarantees 16 KiB).
fn block(d: usize) -> usize {
    (1024 / width(d)).min(32)
}

/// Units sharing one query's keys in [`decode_kernel`]: 32, fewer from head dimension 128 on, so
/// that their partial rows (`units × width` f32) take at most 8 KiB of shared memory.
fn decode_units(d: usize) -> usize {
    (2048 / width(d)).clamp(8, 32)
}

/// The forward pass's results: the output (`[b, h, tq, d]`, contiguous, the inputs' dtype) and
/// each query's log-sum-exp (`[b, h, tq]`, f32), which the backward pass reads.
pub(crate) struct Forward<R: CubeRuntime> {
    pub output: CubeTensor<R>,
    pub log_sum_exp: CubeTensor<R>,
}

/// The backward pass's results, each contiguous in the inputs' dtype.
pub(crate) struct Gradients<R: CubeRuntime> {
    pub query: CubeTensor<R>,
    pub key: CubeTensor<R>,
    pub value: CubeTensor<R>,
}

/// softmax(scale · q kᵀ + key bias + causal mask) v. `q` is `[b, h, tq, d]`, `k` and `v`
/// `[b, h, tk, d]` with `tq ≤ tk` (any strides); `key_bias` is `[b, 1, 1, tk]` in f32.
pub(crate) fn forward<R: CubeRuntime>(
    q: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    key_bias: Option<&CubeTensor<R>>,
    scale: f32,
    causal: bool,
) -> Forward<R> {
    let [b, h, tq, d] = dims(q);
    let output = empty_like(q, [b, h, tq, d], q.dtype);
    let log_sum_exp = empty_like(q, [b, h, tq, 1], DType::F32);
    let (bias, has_bias) = bias_or_placeholder(q, key_bias);
    let block = block(d);
    if tq <= DECODE_QUERIES {
        let units = decode_units(d);
        // Safety: as below.
        unsafe {
            decode_kernel::launch_unchecked::<R>(
                &q.client,
                CubeCount::Static(tq as u32, (b * h) as u32, 1),
                CubeDim::new_1d(units as u32),
                q.clone().into_tensor_arg(),
                k.clone().into_tensor_arg(),
                v.clone().into_tensor_arg(),
                bias.into_tensor_arg(),
                output.clone().into_tensor_arg(),
                log_sum_exp.clone().into_tensor_arg(),
                scale,
                causal as u32,
                has_bias as u32,
                width(d),
                units,
                q.dtype.into(),
            );
        }
        return Forward {
            output,
            log_sum_exp,
        };
    }
    // Safety: every index is checked against the tensors' run-time sizes in the kernel.
    unsafe {
        forward_kernel::launch_unchecked::<R>(
            &q.client,
            CubeCount::Static(tq.div_ceil(block) as u32, (b * h) as u32, 1),
            CubeDim::new_1d(block as u32),
            q.clone().into_tensor_arg(),
            k.clone().into_tensor_arg(),
            v.clone().into_tensor_arg(),
            bias.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            log_sum_exp.clone().into_tensor_arg(),
            scale,
            causal as u32,
            has_bias as u32,
            width(d),
            block,
            q.dtype.into(),
        );
    }
    Forward {
        output,
        log_sum_exp,
    }
}

/// The gradients of the forward pass's output with respect to q, k and v, given the upstream
/// gradient `grad_output` and what [`forward`] returned.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R: CubeRuntime>(
    q: &CubeTensor<R>,
    k: &CubeTensor<R>,
    v: &CubeTensor<R>,
    key_bias: Option<&CubeTensor<R>>,
    forward: &Forward<R>,
    grad_output: &CubeTensor<R>,
    scale: f32,
    causal: bool,
) -> Gradients<R> {
    let [b, h, tq, d] = dims(q);
    let tk = k.meta.shape()[2];
    let (bias, has_bias) = bias_or_placeholder(q, key_bias);
    let block = block(d);
    let query = empty_like(q, [b, h, tq, d], q.dtype);
    let key = empty_like(q, [b, h, tk, d], q.dtype);
    let value = empty_like(q, [b, h, tk, d], q.dtype);
    let arg = |t: &CubeTensor<R>| t.clone().into_tensor_arg();
    // Safety: every index is checked against the tensors' run-time sizes in the kernel.
    unsafe {
        query_gradient_kernel::launch_unchecked::<R>(
            &q.client,
            CubeCount::Static(tq.div_ceil(block) as u32, (b * h) as u32, 1),
            CubeDim::new_1d(block as u32),
            arg(q),
            arg(k),
            arg(v),
            arg(&bias),
            arg(&forward.output),
            arg(&forward.log_sum_exp),
            arg(grad_output),
            arg(&query),
            scale,
            causal as u32,
            has_bias as u32,
            width(d),
            block,
            q.dtype.into(),
        );
    }
    // Safety: every index is checked against the tensors' run-time sizes in the kernel.
    unsafe {
        key_value_gradient_kernel::launch_unchecked::<R>(
            &q.client,
            CubeCount::Static(tk.div_ceil(block) as u32, (b * h) as u32, 1),
            CubeDim::new_1d(block as u32),
            arg(q),
            arg(k),
            arg(v),
            arg(&bias),
            arg(&forward.output),
            arg(&forward.log_sum_exp),
            arg(grad_output),
            arg(&key),
            arg(&value),
            scale,
            causal as u32,
            has_bias as u32,
            width(d),
            block,
            q.dtype.into(),
        );
    }
    Gradients { query, key, value }
}

fn dims<R: CubeRuntime>(t: &CubeTensor<R>) -> [usize; 4] {
    let s = t.meta.shape();
    [s[0], s[1], s[2], s[3]]
}

fn empty_like<R: CubeRuntime>(t: &CubeTensor<R>, shape: [usize; 4], dtype: DType) -> CubeTensor<R> {
    empty_device_dtype(t.client.clone(), t.device.clone(), shape.into(), dtype)
}

/// The key bias, or a one-element placeholder (a kernel argument cannot be absent).
fn bias_or_placeholder<R: CubeRuntime>(
    like: &CubeTensor<R>,
    key_bias: Option<&CubeTensor<R>>,
) -> (CubeTensor<R>, bool) {
    match key_bias {
        Some(bias) => (bias.clone(), true),
        None => (empty_like(like, [1, 1, 1, 1], DType::F32), false),
    }
}

/// Element `[b, h, row, c]` of `t`, through its strides, as f32; zero past the row's end or the
/// tensor's last row, so that padded lanes add nothing.
#[cube]
#[allow(clippy::too_many_arguments)]
fn read<F: Float>(t: &Tensor<F>, b: usize, h: usize, row: usize, c: usize, rows: usize) -> f32 {
    let mut value = 0.0f32;
    if row < rows && c < t.shape(3) {
        value = f32::cast_from(t[at::<F>(t, b, h, row, c)]);
    }
    value
}

/// Position `[b, h, row, c]` of `t` in its buffer.
#[cube]
fn at<F: Float>(t: &Tensor<F>, b: usize, h: usize, row: usize, c: usize) -> usize {
    b * t.stride(0) + h * t.stride(1) + row * t.stride(2) + c * t.stride(3)
}

/// The bias of key `key` in sequence `b` (`[b, 1, 1, tk]`).
#[cube]
fn bias_of(bias: &Tensor<f32>, b: usize, key: usize, has_bias: u32) -> f32 {
    let mut value = 0.0f32;
    if has_bias == 1 {
        value = bias[b * bias.stride(0) + key * bias.stride(3)];
    }
    value
}

/// Where a cube works, from its position in the `(rows / block, batch · heads)` grid: the sequence,
/// the head, and the first of its block's rows (unit `UNIT_POS` takes row `first + UNIT_POS`).
#[cube]
fn placement(heads: usize, #[comptime] block: usize) -> (usize, usize, usize) {
    let pair = CUBE_POS_Y as usize;
    (pair / heads, pair % heads, CUBE_POS_X as usize * block)
}

/// A `width`-long row of zeros in registers.
#[cube]
fn zeros(#[comptime] width: usize) -> Array<f32> {
    let mut values = Array::<f32>::new(width);
    #[unroll]
    for c in 0..width {
        values[c] = 0.0;
    }
    values
}

/// How many keys query `row` sees: all of them, or those up to its own position (bottom-right).
#[cube]
fn visible_keys(row: usize, tq: usize, tk: usize, causal: u32) -> usize {
    let mut end = tk;
    if causal == 1 {
        end = min(tk - tq + row + 1, tk);
    }
    end
}

/// Row `row` of `[b, h, ·, d]` tensor `t` into `slot` of a shared tile of `width`-long rows, as f32
/// (zeros past the end, so every unit takes part in every load).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_row<F: Float>(
    t: &Tensor<F>,
    tile: &mut SharedMemory<f32>,
    b: usize,
    h: usize,
    row: usize,
    rows: usize,
    slot: usize,
    #[comptime] width: usize,
) {
    #[unroll]
    for c in 0..width {
        tile[slot * width + c] = read::<F>(t, b, h, row, c, rows);
    }
}

/// Row `row` of `t` into registers (every index below is a constant once unrolled, so the
/// compiler keeps the array in registers).
#[cube]
#[allow(clippy::too_many_arguments)]
fn row_of<F: Float>(
    t: &Tensor<F>,
    b: usize,
    h: usize,
    row: usize,
    rows: usize,
    #[comptime] width: usize,
) -> Array<f32> {
    let mut values = Array::<f32>::new(width);
    #[unroll]
    for c in 0..width {
        values[c] = read::<F>(t, b, h, row, c, rows);
    }
    values
}

/// `values` (scaled by `by`) into row `row` of `t`, the lanes past its head dimension left out.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_row<F: Float>(
    t: &mut Tensor<F>,
    values: &Array<f32>,
    by: f32,
    b: usize,
    h: usize,
    row: usize,
    #[comptime] width: usize,
) {
    #[unroll]
    for c in 0..width {
        if c < t.shape(3) {
            let i = at::<F>(t, b, h, row, c);
            t[i] = F::cast_from(values[c] * by);
        }
    }
}

/// `a · tile[slot]` over a `width`-long row.
#[cube]
fn dot(a: &Array<f32>, tile: &SharedMemory<f32>, slot: usize, #[comptime] width: usize) -> f32 {
    let mut sum = 0.0f32;
    #[unroll]
    for c in 0..width {
        sum += a[c] * tile[slot * width + c];
    }
    sum
}

/// `acc += by · tile[slot]`.
#[cube]
fn add_scaled(
    acc: &mut Array<f32>,
    by: f32,
    tile: &SharedMemory<f32>,
    slot: usize,
    #[comptime] width: usize,
) {
    #[unroll]
    for c in 0..width {
        acc[c] += by * tile[slot * width + c];
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<f32>,
    output: &mut Tensor<F>,
    log_sum_exp: &mut Tensor<f32>,
    scale: f32,
    causal: u32,
    has_bias: u32,
    #[comptime] width: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let (tq, tk) = (q.shape(2), k.shape(2));
    let (b, h, first) = placement(q.shape(1), block);
    let unit = UNIT_POS as usize;
    let row = first + unit;

    let query = row_of::<F>(q, b, h, row, tq, width);
    let mut acc = zeros(width);
    let end = visible_keys(row, tq, tk, causal);
    // Keys the block's last query sees: tiles past them are skipped by every unit alike.
    let block_end = visible_keys(min(first + block, tq) - 1, tq, tk, causal);

    let mut keys = SharedMemory::<f32>::new(block * width);
    let mut values = SharedMemory::<f32>::new(block * width);
    // Each unit's scores for the current tile (shared memory takes a run-time index; registers
    // would not).
    let mut scores = SharedMemory::<f32>::new(block * block);
    let mut running_max = f32::min_value();
    let mut sum = 0.0f32;
    let mut seen = false;
    for tile in 0..block_end.div_ceil(block) {
        let start = tile * block;
        sync_cube();
        load_row::<F>(k, &mut keys, b, h, start + unit, tk, unit, width);
        load_row::<F>(v, &mut values, b, h, start + unit, tk, unit, width);
        sync_cube();

        let visible = min(end, start + block);
        let mut tile_max = f32::min_value();
        for key in start..visible {
            let s =
                dot(&query, &keys, key - start, width) * scale + bias_of(bias, b, key, has_bias);
            scores[unit * block + key - start] = s;
            tile_max = max(tile_max, s);
        }
        if start < visible {
            // Before the first visible key there is nothing to rescale.
            let mut new_max = tile_max;
            let mut correction = 0.0f32;
            if seen {
                new_max = max(running_max, tile_max);
                correction = (running_max - new_max).exp();
            }
            sum *= correction;
            #[unroll]
            for c in 0..width {
                acc[c] *= correction;
            }
            for key in start..visible {
                let p = (scores[unit * block + key - start] - new_max).exp();
                sum += p;
                add_scaled(&mut acc, p, &values, key - start, width);
            }
            running_max = new_max;
            seen = true;
        }
    }
    if row < tq {
        write_row::<F>(output, &acc, 1.0 / sum, b, h, row, width);
        let l = at::<f32>(log_sum_exp, b, h, row, 0);
        log_sum_exp[l] = running_max + sum.ln();
    }
}

/// The forward for few queries (sampling's one new token): one cube per query, its units taking
/// every `units`-th key with their own running softmax, then combined in shared memory. Writes
/// what [`forward_kernel`] writes, log-sum-exp included.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn decode_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<f32>,
    output: &mut Tensor<F>,
    log_sum_exp: &mut Tensor<f32>,
    scale: f32,
    causal: u32,
    has_bias: u32,
    #[comptime] width: usize,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    let (tq, tk) = (q.shape(2), k.shape(2));
    // One query per cube: its "block" is one row, and the units split its keys.
    let (b, h, row) = placement(q.shape(1), 1usize);
    let unit = UNIT_POS as usize;

    let query = row_of::<F>(q, b, h, row, tq, width);
    let mut acc = zeros(width);
    let end = visible_keys(row, tq, tk, causal);
    let mut running_max = f32::min_value();
    let mut sum = 0.0f32;
    let mut key = unit;
    while key < end {
        let own_key = row_of::<F>(k, b, h, key, tk, width);
        let value = row_of::<F>(v, b, h, key, tk, width);
        let mut s = 0.0f32;
        #[unroll]
        for c in 0..width {
            s += query[c] * own_key[c];
        }
        s = s * scale + bias_of(bias, b, key, has_bias);
        // The first key of this unit sets the maximum (sum is 0, so the correction is moot).
        let new_max = max(running_max, s);
        let correction = (running_max - new_max).exp();
        let p = (s - new_max).exp();
        sum = sum * correction + p;
        #[unroll]
        for c in 0..width {
            acc[c] = acc[c] * correction + p * value[c];
        }
        running_max = new_max;
        key += units;
    }

    // Combine the units: rescale each to the common maximum, then sum.
    let mut maxima = SharedMemory::<f32>::new(units);
    let mut sums = SharedMemory::<f32>::new(units);
    let mut parts = SharedMemory::<f32>::new(units * width);
    maxima[unit] = running_max;
    sync_cube();
    let mut common = f32::min_value();
    for u in 0..units {
        common = max(common, maxima[u]);
    }
    let mut factor = 0.0f32;
    if sum > 0.0 {
        factor = (running_max - common).exp();
    }
    sums[unit] = sum * factor;
    #[unroll]
    for c in 0..width {
        parts[unit * width + c] = acc[c] * factor;
    }
    sync_cube();
    let mut total = 0.0f32;
    for u in 0..units {
        total += sums[u];
    }
    // Unit c writes lane c (a head dimension past `units` takes more than one lane per unit).
    let mut c = unit;
    while c < q.shape(3) {
        let mut lane = 0.0f32;
        for u in 0..units {
            lane += parts[u * width + c];
        }
        let i = at::<F>(output, b, h, row, c);
        output[i] = F::cast_from(lane / total);
        c += units;
    }
    if unit == 0 {
        let l = at::<f32>(log_sum_exp, b, h, row, 0);
        log_sum_exp[l] = common + total.ln();
    }
}

/// dQ for a block of queries: dQ_i = scale Σ_j P_ij (dP_ij − D_i) k_j, with dP_ij = dO_i · v_j and
/// D_i = dO_i · O_i.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn query_gradient_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<f32>,
    output: &Tensor<F>,
    log_sum_exp: &Tensor<f32>,
    grad_output: &Tensor<F>,
    grad_query: &mut Tensor<F>,
    scale: f32,
    causal: u32,
    has_bias: u32,
    #[comptime] width: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let (tq, tk) = (q.shape(2), k.shape(2));
    let (b, h, first) = placement(q.shape(1), block);
    let unit = UNIT_POS as usize;
    let row = first + unit;

    let query = row_of::<F>(q, b, h, row, tq, width);
    let upstream = row_of::<F>(grad_output, b, h, row, tq, width);
    let out = row_of::<F>(output, b, h, row, tq, width);
    let mut acc = zeros(width);
    let mut delta = 0.0f32;
    #[unroll]
    for c in 0..width {
        delta += upstream[c] * out[c];
    }
    let mut lse = 0.0f32;
    if row < tq {
        lse = log_sum_exp[at::<f32>(log_sum_exp, b, h, row, 0)];
    }
    let end = visible_keys(row, tq, tk, causal);
    let block_end = visible_keys(min(first + block, tq) - 1, tq, tk, causal);

    let mut keys = SharedMemory::<f32>::new(block * width);
    let mut values = SharedMemory::<f32>::new(block * width);
    for tile in 0..block_end.div_ceil(block) {
        let start = tile * block;
        sync_cube();
        load_row::<F>(k, &mut keys, b, h, start + unit, tk, unit, width);
        load_row::<F>(v, &mut values, b, h, start + unit, tk, unit, width);
        sync_cube();
        for key in start..min(end, start + block) {
            let j = key - start;
            let s = dot(&query, &keys, j, width) * scale + bias_of(bias, b, key, has_bias);
            let p = (s - lse).exp();
            let ds = p * (dot(&upstream, &values, j, width) - delta);
            add_scaled(&mut acc, ds, &keys, j, width);
        }
    }
    if row < tq {
        write_row::<F>(grad_query, &acc, scale, b, h, row, width);
    }
}

/// dK and dV for a block of keys: dV_j = Σ_i P_ij dO_i and dK_j = scale Σ_i P_ij (dP_ij − D_i) q_i,
/// over the queries that see key j.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
fn key_value_gradient_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    bias: &Tensor<f32>,
    output: &Tensor<F>,
    log_sum_exp: &Tensor<f32>,
    grad_output: &Tensor<F>,
    grad_key: &mut Tensor<F>,
    grad_value: &mut Tensor<F>,
    scale: f32,
    causal: u32,
    has_bias: u32,
    #[comptime] width: usize,
    #[comptime] block: usize,
    #[define(F)] _dtype: StorageType,
) {
    let (tq, tk) = (q.shape(2), k.shape(2));
    let (b, h, first) = placement(q.shape(1), block);
    let unit = UNIT_POS as usize;
    let key = first + unit;
    let live = key < tk;

    let own_key = row_of::<F>(k, b, h, key, tk, width);
    let own_value = row_of::<F>(v, b, h, key, tk, width);
    let mut grad_k = zeros(width);
    let mut grad_v = zeros(width);
    let key_bias = bias_of(bias, b, min(key, tk - 1), has_bias);
    // The first query that sees this block's first key (causal: query i sees keys ≤ tk − tq + i).
    let offset = tk - tq;
    let mut from = 0usize;
    if causal == 1 && first > offset {
        from = first - offset;
    }

    let mut queries = SharedMemory::<f32>::new(block * width);
    let mut upstream = SharedMemory::<f32>::new(block * width);
    let mut lse = SharedMemory::<f32>::new(block);
    let mut delta = SharedMemory::<f32>::new(block);
    for tile in from / block..tq.div_ceil(block) {
        let start = tile * block;
        let i = start + unit;
        sync_cube();
        load_row::<F>(q, &mut queries, b, h, i, tq, unit, width);
        load_row::<F>(grad_output, &mut upstream, b, h, i, tq, unit, width);
        let out = row_of::<F>(output, b, h, i, tq, width);
        let mut l = 0.0f32;
        if i < tq {
            l = log_sum_exp[at::<f32>(log_sum_exp, b, h, i, 0)];
        }
        delta[unit] = dot(&out, &upstream, unit, width);
        lse[unit] = l;
        sync_cube();
        // Query i sees this key when i ≥ key − offset (causal) or always.
        let mut lowest = start;
        if causal == 1 && key > offset + start {
            lowest = key - offset;
        }
        if live {
            for i in lowest..min(tq, start + block) {
                let r = i - start;
                let s = dot(&own_key, &queries, r, width) * scale + key_bias;
                let p = (s - lse[r]).exp();
                let ds = p * (dot(&own_value, &upstream, r, width) - delta[r]);
                add_scaled(&mut grad_v, p, &upstream, r, width);
                add_scaled(&mut grad_k, ds, &queries, r, width);
            }
        }
    }
    if live {
        write_row::<F>(grad_key, &grad_k, scale, b, h, key, width);
        write_row::<F>(grad_value, &grad_v, 1.0, b, h, key, width);
    }
}
