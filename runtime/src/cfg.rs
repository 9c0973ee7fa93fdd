//! The one place outside `backend/mpi/` that names the `mpi` feature, as
//! tokio's `cfg_rt!` does for its runtime: code that exists only with MPI
//! (or only without it) is wrapped in [`cfg_mpi!`] (or `cfg_not_mpi!`),
//! so a reader finds every MPI seam by one name, and renaming or
//! splitting the feature touches one file.

/// Items that exist only with the `mpi` feature.
macro_rules! cfg_mpi {
    ($($item:item)*) => {
        $(
            #[cfg(feature = "mpi")]
            $item
        )*
    };
}

/// Items that exist only without the `mpi` feature: what stands in for
/// the MPI backend there.
macro_rules! cfg_not_mpi {
    ($($item:item)*) => {
        $(
            #[cfg(not(feature = "mpi"))]
            $item
        )*
    };
}
