//! Warnings a request collects on its way — the denials of WARN-mode
//! policies — for the server to send with a successful answer (gRPC
//! metadata `arbiter-warning`, HTTP `Warning: 299`). They live in the
//! request's task, so that nothing in between has to carry them.

use std::cell::RefCell;
use std::future::Future;

/// Most warnings one answer carries.
pub const MAX_WARNINGS: usize = 16;

tokio::task_local! {
    static WARNINGS: RefCell<Vec<String>>;
}

/// Runs `request`, returning its output and the warnings it raised, each
/// once, in the order raised.
pub async fn collect<F: Future>(request: F) -> (F::Output, Vec<String>) {
    WARNINGS
        .scope(RefCell::new(Vec::new()), async {
            let output = request.await;
            let warnings = WARNINGS.with(RefCell::take);
            (output, warnings)
        })
        .await
}

/// Adds a warning to the current request's answer (none outside
/// [`collect`]); a warning raised again, by a retry say, is kept once.
pub(crate) fn warn(text: String) {
    let _ = WARNINGS.try_with(|warnings| {
        let mut warnings = warnings.borrow_mut();
        if warnings.len() < MAX_WARNINGS && !warnings.contains(&text) {
            warnings.push(text);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn warnings_are_collected_once_in_order_and_bounded() {
        let ((), warnings) = collect(async {
            warn("b".into());
            warn("a".into());
            warn("b".into());
            for i in 0..100 {
                warn(format!("w{i}"));
            }
        })
        .await;
        assert_eq!(&warnings[..3], ["b", "a", "w0"]);
        assert_eq!(warnings.len(), MAX_WARNINGS);
        // Outside a request they go nowhere.
        warn("lost".into());
    }
}
