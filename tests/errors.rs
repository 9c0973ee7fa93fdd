//! `parjob::Error` composes: `?` on a `std::io::Error` and on a dump or
//! load error, in a function that returns `parjob::Result`.

mod common;

use parjob::PersistError;
use std::path::Path;

/// `?` on an I/O error and on a dump/load error, in one function that
/// returns `parjob::Result`.
fn save_and_reload(dir: &Path, missing: &Path) -> parjob::Result<Vec<f64>> {
    std::fs::create_dir_all(dir)?;
    parjob::dump(&vec![1.5, 2.5], dir.join("v.pjd"))?;
    let back: Vec<f64> = parjob::load(dir.join("v.pjd"))?;
    std::fs::read(missing)?;
    Ok(back)
}

#[test]
fn io_and_persist_errors_convert_with_the_question_mark() {
    let dir = common::scratch("errors", "convert");
    let missing = dir.join("absent");
    let err = save_and_reload(&dir.join("sub"), &missing).unwrap_err();
    match &err {
        parjob::Error::Io { context, source } => {
            assert!(context.is_empty());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    assert!(err.to_string().starts_with("I/O failed: "), "{err}");
    std::fs::write(&missing, b"here").unwrap();
    assert_eq!(
        save_and_reload(&dir.join("sub"), &missing).unwrap(),
        [1.5, 2.5]
    );
    std::fs::write(dir.join("sub").join("v.pjd"), b"not a dump").unwrap();
    let err =
        (|| -> parjob::Result<Vec<f64>> { Ok(parjob::load(dir.join("sub").join("v.pjd"))?) })()
            .unwrap_err();
    assert!(
        matches!(err, parjob::Error::Persist(PersistError::NotADump)),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
