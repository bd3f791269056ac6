use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::FormatError;

/// The location [`crate::load_model`] gives the large inline tensors it
/// leaves in the model file, to be read one at a time at import. No file can
/// have this name: paths hold no NUL.
pub(crate) const IN_MODEL_FILE: &str = "\0model file";

/// The folder a model's external data must stay inside, and the model file
/// itself, when it was loaded from one.
#[derive(Clone, Debug)]
pub struct ExternalDataDir {
    root: PathBuf,
    model_file: Option<PathBuf>,
}

impl ExternalDataDir {
    pub fn new(root: impl Into<PathBuf>) -> ExternalDataDir {
        ExternalDataDir {
            root: root.into(),
            model_file: None,
        }
    }

    /// The folder of `model_file`, which may also be read for tensors
    /// `load_model` left in it.
    pub(crate) fn of_model_file(model_file: &Path) -> ExternalDataDir {
        let dir = match model_file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ExternalDataDir {
            root: dir,
            model_file: Some(model_file.to_path_buf()),
        }
    }

    /// Resolves `location` inside the folder, refusing absolute paths, `..`
    /// and symlinks that lead outside.
    fn resolve(&self, location: &str) -> Result<PathBuf, FormatError> {
        if location == IN_MODEL_FILE {
            return self.model_file.clone().ok_or_else(|| {
                FormatError(
                    "external data location names the model file, which is not read from disk"
                        .into(),
                )
            });
        }
        let rel = Path::new(location);
        let escapes = rel.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        });
        if location.is_empty() || escapes {
            return Err(FormatError(format!(
                "external data location '{location}' is outside the model's folder"
            )));
        }
        let root = self.root.canonicalize().map_err(|e| {
            FormatError(format!(
                "cannot open model folder '{}': {e}",
                self.root.display()
            ))
        })?;
        let path = root.join(rel).canonicalize().map_err(|e| {
            FormatError(format!("cannot open external data file '{location}': {e}"))
        })?;
        if !path.starts_with(&root) {
            return Err(FormatError(format!(
                "external data location '{location}' leads outside the model's folder"
            )));
        }
        Ok(path)
    }

    /// Reads `length` bytes (or the rest of the file) at `offset`, checking
    /// the range against the file's size before allocating.
    pub fn read(
        &self,
        location: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<Vec<u8>, FormatError> {
        let path = self.resolve(location)?;
        let mut file = File::open(&path).map_err(|e| {
            FormatError(format!("cannot open external data file '{location}': {e}"))
        })?;
        let size = file
            .metadata()
            .map_err(|e| FormatError(format!("cannot read external data file '{location}': {e}")))?
            .len();
        if offset > size {
            return Err(FormatError(format!(
                "external data offset {offset} is past the end of '{location}' ({size} bytes)"
            )));
        }
        let length = length.unwrap_or(size - offset);
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(FormatError(format!(
                "external data range {offset}+{length} is past the end of '{location}' ({size} bytes)"
            )));
        }
        let mut buf = vec![0u8; length as usize];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut buf))
            .map_err(|e| {
                FormatError(format!("cannot read external data file '{location}': {e}"))
            })?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confines_locations() {
        let dir = std::env::temp_dir().join(format!("onyx-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("w.bin"), [1u8, 2, 3, 4]).unwrap();
        let ext = ExternalDataDir::new(&dir);
        assert_eq!(ext.read("w.bin", 1, Some(2)).unwrap(), vec![2, 3]);
        assert_eq!(ext.read("w.bin", 0, None).unwrap(), vec![1, 2, 3, 4]);
        assert!(ext
            .read("w.bin", 3, Some(2))
            .unwrap_err()
            .0
            .contains("past the end"));
        assert!(ext
            .read("../w.bin", 0, None)
            .unwrap_err()
            .0
            .contains("outside"));
        assert!(ext
            .read("/etc/passwd", 0, None)
            .unwrap_err()
            .0
            .contains("outside"));
        #[cfg(unix)]
        {
            let link = dir.join("link.bin");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
            assert!(ext
                .read("link.bin", 0, None)
                .unwrap_err()
                .0
                .contains("outside"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
