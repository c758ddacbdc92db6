//! Where the built binaries and the test output live.

use std::path::PathBuf;

/// `target/<profile>/`: the test executable runs from `target/<profile>/deps/`.
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// A binary of the workspace, built by `cargo build` (scripts/test builds
/// them before running the tests).
pub fn workspace_binary(name: &str) -> PathBuf {
    let path = target_profile_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// `target/test-output/<name>/`: logs, screenshots and result files of one
/// test, kept after the run for inspection.
pub fn test_output_dir(name: &str) -> PathBuf {
    let dir = target_profile_dir()
        .parent()
        .expect("target dir")
        .join("test-output")
        .join(name);
    std::fs::create_dir_all(&dir).expect("create test output dir");
    dir
}

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("seckill-{label}-{}", crate::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
