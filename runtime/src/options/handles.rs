//! The interned handles among the options: a [`TempFolder`]'s path and an
//! [`Initializer`]'s task and arguments live in process-wide tables, so
//! that [`Options`](super::Options) stay `Copy`.

/// A copyable handle to a path interned in the process-wide `$table`:
/// the struct, `new`, `path` and `From` a `&str`, `&Path` or `PathBuf`.
macro_rules! interned_path {
    ($(#[$doc:meta])* $name:ident, $table:ident, $path_doc:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(u32);

        static $table: std::sync::Mutex<Vec<std::path::PathBuf>> =
            std::sync::Mutex::new(Vec::new());

        impl $name {
            /// The handle of `path` (the same path gives the same handle).
            pub fn new(path: impl AsRef<std::path::Path>) -> Self {
                $name(intern(&$table, path.as_ref()))
            }

            #[doc = $path_doc]
            pub fn path(self) -> std::path::PathBuf {
                let paths = $table.lock().unwrap_or_else(|p| p.into_inner());
                paths[self.0 as usize].clone()
            }
        }

        impl From<&str> for $name {
            fn from(path: &str) -> Self {
                $name::new(path)
            }
        }

        impl From<&std::path::Path> for $name {
            fn from(path: &std::path::Path) -> Self {
                $name::new(path)
            }
        }

        impl From<std::path::PathBuf> for $name {
            fn from(path: std::path::PathBuf) -> Self {
                $name::new(path)
            }
        }
    };
}

interned_path!(
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
    TempFolder,
    TEMP_FOLDERS,
    "The folder."
);

interned_path!(
    /// `trace`: the file a traced run writes its Chrome trace-event JSON to,
    /// with its HTML report beside it. A small copyable handle to an
    /// interned path, like [`TempFolder`], so that options stay `Copy`.
    ///
    /// ```
    /// use parjob_runtime::TraceFile;
    /// let a = TraceFile::new("run.json");
    /// assert_eq!(a, TraceFile::from("run.json"));
    /// assert_eq!(a.path(), std::path::Path::new("run.json"));
    /// ```
    TraceFile,
    TRACE_FILES,
    "The JSON file's path."
);

/// `path`'s index in `table`, added if it is new.
fn intern(table: &std::sync::Mutex<Vec<std::path::PathBuf>>, path: &std::path::Path) -> u32 {
    let mut paths = table.lock().unwrap_or_else(|p| p.into_inner());
    let index = match paths.iter().position(|f| f == path) {
        Some(i) => i,
        None => {
            paths.push(path.to_path_buf());
            paths.len() - 1
        }
    };
    index as u32
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
