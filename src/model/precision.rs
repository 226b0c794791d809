//! The precision the model's matrix products compute in.
//!
//! `F32` computes everything in f32. `Bf16` and `F16` are mixed precision as PyTorch's autocast does
//! it: the inputs of every linear layer and of attention are rounded to the half type and multiplied
//! there (tensor cores on GPUs), their outputs come back as f32, and the weights, the optimizer, the
//! norms, the residual stream and the loss stay f32. The weights are never stored in half precision.

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products in bfloat16 (f32's range, 8 bits of mantissa): NVIDIA Ampere and later, and
    /// on flex the AMX tiles of Intel Xeons since Sapphire Rapids ([`Precision::on_amx_tiles`]).
    Bf16,
    /// Matrix products in float16 (11 bits of mantissa, range ±65504): GPUs with f16 support.
    F16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        })
    }
}

impl Precision {
    /// The half type products compute in, or `None` for plain f32.
    fn half(self) -> Option<FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(FloatDType::BF16),
            Precision::F16 => Some(FloatDType::F16),
        }
    }

    /// An error, before any work, when `device` cannot compute in this precision (wgpu has no bf16;
    /// f16 needs the adapter's `shader-f16`).
    pub fn check_supported<B: Backend>(self, device: &B::Device) -> Result<()> {
        match self.half() {
            Some(half) if !B::supports_dtype(device, DType::from(half)) => {
                Err(Error::invalid(format!(
                    "{} ({device:?}) cannot compute in {self}; use --precision f32",
                    B::name(device)
                )))
            }
            _ => Ok(()),
        }
    }

    /// The additive mask value for padded keys: HF's `finfo(dtype).min` in f32. In a half type
    /// `f32::MIN` would round to -inf, and Burn's kernels give a query whose keys are all -inf a
    /// zero output instead of attending to them as HF does; half the type's lowest finite value
    /// stays finite even after a score (of any sane size) is added to it.
    pub(crate) fn mask_value(self) -> f32 {
        match self {
            Precision::F32 => f32::MIN,
            Precision::Bf16 => half::bf16::MIN.to_f32() / 2.0,
            Precision::F16 => half::f16::MIN.to_f32() / 2.0,
        }
    }

    /// Whether this precision's products run on the CPU's AMX tiles for `B` and f32 tensors: bf16 on
    /// flex (plain or under autodiff) where the CPU has AMX-BF16. The tensors then stay f32, the
    /// linear layers round their operands to bf16 as the tile kernel packs them, and attention keeps
    /// the f32 flash kernel (Burn's bf16 attention on flex is unfused and slower than f32).
    pub fn on_amx_tiles<B: Backend>(self, dtype: DType) -> bool {
        self.amx_cpu::<B>(dtype).is_some()
    }

    /// This precision as progress lines name it on `B`: "bf16 on AMX tiles" where its products run
    /// there ([`Self::on_amx_tiles`]).
    pub fn describe_on<B: Backend>(self) -> String {
        if self.on_amx_tiles::<B>(DType::F32) {
            format!("{self} on AMX tiles")
        } else {
            self.to_string()
        }
    }

    #[cfg(all(
        feature = "flex",
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    ))]
    fn amx_cpu<B: Backend>(self, dtype: DType) -> Option<crate::kernels::flex::Cpu> {
        let cpu = crate::kernels::flex::cpu::<B>(dtype)?;
        (self == Precision::Bf16 && crate::kernels::amx::available()).then_some(cpu)
    }

    #[cfg(not(all(
        feature = "flex",
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    )))]
    #[allow(clippy::extra_unused_type_parameters)] // the signature of the version above
    fn amx_cpu<B: Backend>(self, _: DType) -> Option<std::convert::Infallible> {
        None
    }

    /// `x` rounded to the compute type (unchanged for f32, and on AMX tiles, whose kernel rounds).
    pub(crate) fn round<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.on_amx_tiles::<B>(x.dtype()) {
            return x;
        }
        match self.half() {
            Some(half) => x.cast(half),
            None => x,
        }
    }

    /// A product's result brought back to f32 for the rest of the network.
    pub(crate) fn widen<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.half() {
            Some(_) if x.dtype() != DType::F32 => x.cast(FloatDType::F32),
            _ => x,
        }
    }

    /// `layer.forward(x)` with the product in this precision.
    pub(crate) fn linear<B: Backend, const D: usize>(
        self,
        layer: &Linear<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        let (weight, bias) = (layer.weight.val(), layer.bias.as_ref().map(|b| b.val()));
        #[cfg(all(
            feature = "flex",
            target_arch = "x86_64",
            target_os = "linux",
            target_env = "gnu"
        ))]
        if let Some(cpu) = self.amx_cpu::<B>(x.dtype()) {
            return crate::kernels::amx_linear::linear(x, weight, bias, cpu);
        }
        if self.half().is_none() {
            return crate::kernels::matmul::linear(x, weight, bias);
        }
        let (weight, bias) = (self.round(weight), bias.map(|b| self.round(b)));
        self.widen(crate::kernels::matmul::linear(self.round(x), weight, bias))
    }
}
