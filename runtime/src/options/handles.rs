//! The interned handles among the options: a [`TempFolder`]'s path and an
//! [`Initializer`]'s task and arguments live in process-wide tables, so
//! that [`Options`](super::Options) stay `Copy`.

/// joblib's `temp_folder`: where shared memory is backed by files instead
/// of a `memfd` (see [`crate::shm`]). A small copyable handle to an
/// interned path, so [`Options`](super::Options) stay `Copy`.
///
/// ```
/// use parjob_runtime::TempFolder;
/// let a = TempFolder::new("/mnt/scratch");
/// assert_eq!(a, TempFolder::from("/mnt/scratch"));
/// assert_eq!(a.path(), std::path::Path::new("/mnt/scratch"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TempFolder(u32);

static TEMP_FOLDERS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

impl TempFolder {
    /// The handle of `path` (the same path gives the same handle).
    pub fn new(path: impl AsRef<std::path::Path>) -> Self {
        let path = path.as_ref();
        let mut folders = TEMP_FOLDERS.lock().unwrap_or_else(|p| p.into_inner());
        let index = match folders.iter().position(|f| f == path) {
            Some(i) => i,
            None => {
                folders.push(path.to_path_buf());
                folders.len() - 1
            }
        };
        TempFolder(index as u32)
    }

    /// The folder.
    pub fn path(self) -> std::path::PathBuf {
        let folders = TEMP_FOLDERS.lock().unwrap_or_else(|p| p.into_inner());
        folders[self.0 as usize].clone()
    }
}

impl From<&str> for TempFolder {
    fn from(path: &str) -> Self {
        TempFolder::new(path)
    }
}

impl From<&std::path::Path> for TempFolder {
    fn from(path: &std::path::Path) -> Self {
        TempFolder::new(path)
    }
}

impl From<std::path::PathBuf> for TempFolder {
    fn from(path: std::path::PathBuf) -> Self {
        TempFolder::new(path)
    }
}

/// joblib's `initializer` and `initargs`: a process task
/// (`#[parallel(backend = "process")]`) and its arguments, run once in each
/// worker before its first job (once per worker process, pool thread, or
/// the caller's thread for a sequential run). Made by
/// [`Initializer::of`](crate::Initializer::of); a small handle, like
/// [`TempFolder`], so that options stay `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Initializer(u32);

/// What an [`Initializer`] stands for: the task and its encoded arguments
/// (or why they did not encode).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InitializerSpec {
    pub(crate) task: &'static str,
    pub(crate) args: std::result::Result<Vec<u8>, String>,
}

static INITIALIZERS: std::sync::Mutex<Vec<std::sync::Arc<InitializerSpec>>> =
    std::sync::Mutex::new(Vec::new());

impl Initializer {
    /// The handle of `spec` (the same task and arguments, the same handle).
    pub(crate) fn intern(spec: InitializerSpec) -> Self {
        let mut all = INITIALIZERS.lock().unwrap_or_else(|p| p.into_inner());
        let index = match all.iter().position(|s| **s == spec) {
            Some(i) => i,
            None => {
                all.push(std::sync::Arc::new(spec));
                all.len() - 1
            }
        };
        Initializer(index as u32)
    }

    /// The task and arguments it stands for.
    pub(crate) fn spec(self) -> std::sync::Arc<InitializerSpec> {
        let all = INITIALIZERS.lock().unwrap_or_else(|p| p.into_inner());
        all[self.0 as usize].clone()
    }

    /// The task it runs.
    pub fn task(self) -> &'static str {
        self.spec().task
    }

    /// A number that tells initializers apart (for a worker pool's key).
    pub(crate) fn key(self) -> u32 {
        self.0
    }
}
