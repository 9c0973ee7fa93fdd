//! The one-page report: `report.html` with the trace's JSON inside it.
//!
//! The page is one file with its style, its script and its data inline,
//! and nothing fetched: it opens offline, from a mail attachment as well
//! as from disk. Its script draws the lanes on a canvas (zoom with the
//! wheel, pan by dragging, hover for an item's duration and bytes) and the
//! summary from `otherData.parjob`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const TEMPLATE: &str = include_str!("report.html");
const SLOT: &str = "/*PARJOB_TRACE*/";

/// The page's text before and after its JSON.
pub(crate) fn around() -> (&'static str, &'static str) {
    TEMPLATE.split_once(SLOT).unwrap_or((TEMPLATE, ""))
}

/// The page for a trace's JSON text. A `</` in the JSON (only possible
/// inside a string; parjob's own traces escape every `<`) is written
/// `<\/`, the same string to JSON, so the data cannot end its `<script>`
/// element.
pub(crate) fn page(json: &str) -> String {
    let (before, after) = around();
    [before, &json.replace("</", "<\\/"), after].concat()
}

/// The self-contained HTML report of a trace, from the trace's JSON
/// text: what a traced run writes beside its JSON file.
///
/// Fails when the text is not a trace that parjob wrote.
///
/// ```
/// let json = r#"{"traceEvents":[],"otherData":{"parjob":{"format":1}}}"#;
/// let html = parjob_runtime::trace::report_html(json).unwrap();
/// assert!(html.starts_with("<!DOCTYPE html>"));
/// assert!(parjob_runtime::trace::report_html("{}").is_err());
/// ```
pub fn report_html(json: &str) -> Result<String> {
    let text = json.trim_start();
    if !text.starts_with('{') || !text.contains("\"traceEvents\"") || !text.contains("\"parjob\"") {
        return Err(Error::Config(
            "not a parjob trace: expected the JSON object a run with `trace = \"run.json\"` writes"
                .into(),
        ));
    }
    Ok(page(json))
}

/// Rebuilds the report of the trace at `json_path`, writing it beside the
/// file with the extension `html`, and returns the page's path.
///
/// ```no_run
/// let page = parjob_runtime::trace::rebuild_report("run.json".as_ref()).unwrap();
/// assert_eq!(page, std::path::Path::new("run.html"));
/// ```
pub fn rebuild_report(json_path: &Path) -> Result<PathBuf> {
    let bytes = std::fs::read(json_path).map_err(|source| Error::Io {
        context: format!("reading the trace {}", json_path.display()),
        source,
    })?;
    let json = String::from_utf8(bytes).map_err(|_| {
        Error::Config(format!(
            "the trace {} is not UTF-8 text",
            json_path.display()
        ))
    })?;
    let html = report_html(&json)?;
    let out = json_path.with_extension("html");
    super::write_file(&out, &[html.as_bytes()]).map_err(|source| Error::Io {
        context: format!("writing the report {}", out.display()),
        source,
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_cannot_close_the_script_element() {
        let html = page(r#"{"traceEvents":[],"x":"</script><b>"}"#);
        assert!(!html.contains("</script><b>"));
        assert!(html.contains(r#""x":"<\/script><b>""#));
        assert!(!html.contains(SLOT));
    }
}
