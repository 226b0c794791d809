//! The crate's one error type: every failure names the file (when there is one) and what is wrong with it.

use std::path::PathBuf;

/// What can go wrong when reading models, palettes, images or datasets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written at all.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file was read but its contents are not what they should be.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// An argument or a combination of inputs that cannot work (e.g. a palette that does not fit the model).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::Invalid(reason.into())
    }
}

/// Reads a whole file, naming it in the error.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Writes a whole file atomically (temporary file, then rename), so a crash never leaves half a file.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn write_file_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
