//! Picks the compute backend from `--device` and runs a generic job on it.

use burn::tensor::backend::Backend;

/// Where the model computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    /// CUDA when this binary was built with it and an NVIDIA driver is present, else the CPU (flex).
    #[default]
    Auto,
    /// Pure-Rust CPU backend: always available.
    Flex,
    /// Vulkan, Metal or DX12 GPU through wgpu.
    Wgpu,
    /// NVIDIA GPU (build with `--features cuda`).
    Cuda,
}

/// Work generic over the backend; `run_on` instantiates it for the chosen one.
pub trait BackendJob {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> anyhow::Result<Self::Output>;
}

pub fn run_on<J: BackendJob>(kind: DeviceKind, job: J) -> anyhow::Result<J::Output> {
    match kind {
        // Each arm asks for the driver at most once (a dlopen).
        DeviceKind::Auto if cfg!(feature = "cuda") && nvidia_driver_loads() => cuda(job),
        DeviceKind::Auto | DeviceKind::Flex => flex(job),
        DeviceKind::Wgpu => wgpu(job),
        DeviceKind::Cuda if cfg!(feature = "cuda") && !nvidia_driver_loads() => anyhow::bail!(
            "no NVIDIA driver here (libcuda.so.1 does not load): --device cuda needs an NVIDIA GPU; \
             use --device wgpu or flex"
        ),
        DeviceKind::Cuda => cuda(job),
    }
}

#[cfg(feature = "flex")]
fn flex<J: BackendJob>(job: J) -> anyhow::Result<J::Output> {
    job.run::<burn::backend::Flex>(Default::default())
}
#[cfg(not(feature = "flex"))]
fn flex<J: BackendJob>(_: J) -> anyhow::Result<J::Output> {
    anyhow::bail!("this binary was built without the `flex` feature")
}

#[cfg(feature = "wgpu")]
fn wgpu<J: BackendJob>(job: J) -> anyhow::Result<J::Output> {
    job.run::<burn::backend::Wgpu>(burn::backend::wgpu::WgpuDevice::default())
}
#[cfg(not(feature = "wgpu"))]
fn wgpu<J: BackendJob>(_: J) -> anyhow::Result<J::Output> {
    anyhow::bail!("this binary was built without the `wgpu` feature")
}

#[cfg(feature = "cuda")]
fn cuda<J: BackendJob>(job: J) -> anyhow::Result<J::Output> {
    job.run::<burn::backend::Cuda>(burn::backend::cuda::CudaDevice::default())
}
#[cfg(not(feature = "cuda"))]
fn cuda<J: BackendJob>(_: J) -> anyhow::Result<J::Output> {
    anyhow::bail!("this binary was built without CUDA: rebuild with `--features cuda`")
}

/// Whether the NVIDIA driver library loads. cudarc panics on first use without it, so `--device cuda`
/// asks first and `auto` falls back to the CPU.
fn nvidia_driver_loads() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        [c"libcuda.so.1", c"libcuda.so"].iter().any(|name| {
            // SAFETY: a valid C string; the handle stays open, as cudarc opens the same library.
            unsafe { !libc::dlopen(name.as_ptr(), libc::RTLD_LAZY).is_null() }
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true // elsewhere cudarc's own loading decides
    }
}
