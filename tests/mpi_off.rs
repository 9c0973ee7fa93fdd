//! Without the `mpi` feature, naming the MPI backend is an error that says
//! how to turn it on; the name itself parses everywhere.

use parjob::{Backend, Parallel};

#[cfg(not(feature = "mpi"))]
#[parjob::parallel]
fn double(x: u32) -> u32 {
    2 * x
}

#[test]
fn mpi_is_a_backend_name() {
    assert_eq!("mpi".parse::<Backend>().unwrap(), Backend::Mpi);
    assert_eq!(" MPI ".parse::<Backend>().unwrap(), Backend::Mpi);
    assert!(Backend::Mpi.is_remote() && Backend::MpiSpawn { workers: 2 }.is_mpi());
}

#[cfg(not(feature = "mpi"))]
#[test]
fn without_the_feature_the_mpi_backend_says_how_to_enable_it() {
    for backend in [Backend::Mpi, Backend::MpiSpawn { workers: 2 }] {
        let err = Parallel::new()
            .backend(backend)
            .n_jobs(2)
            .run((0..4).map(double::delayed))
            .unwrap_err();
        match err {
            parjob::Error::Config(text) => {
                assert!(text.contains("features = [\"mpi\"]"), "{text}");
                assert!(text.contains("libopenmpi-dev"), "{text}");
            }
            other => panic!("expected a config error, got {other}"),
        }
    }
}

#[test]
fn n_jobs_on_mpi_counts_ranks_not_cpus() {
    let plan = Parallel::new()
        .backend(Backend::MpiSpawn { workers: 5 })
        .plan()
        .unwrap();
    assert_eq!(
        (plan.n_jobs, plan.backend),
        (5, Backend::MpiSpawn { workers: 5 })
    );
    let plan = Parallel::new()
        .backend(Backend::MpiSpawn { workers: 5 })
        .n_jobs(-2)
        .plan()
        .unwrap();
    assert_eq!(plan.n_jobs, 4);
}

#[test]
fn require_sharedmem_refuses_mpi_as_it_refuses_processes() {
    let err = Parallel::new()
        .backend(Backend::Mpi)
        .require_sharedmem()
        .plan()
        .unwrap_err();
    assert!(err.to_string().contains("the mpi backend"), "{err}");
    let plan = parjob::config().backend(Backend::Mpi).scope(|| {
        Parallel::new()
            .require_sharedmem()
            .n_jobs(2)
            .plan()
            .unwrap()
    });
    assert_eq!(plan.backend, Backend::Thread);
}
