//! prompt-review: a prompt is published only after someone else reviewed
//! it. Publishing needs a `reviewed-by` label naming a principal other than
//! the one publishing; otherwise the request is forbidden (403).

#![no_std]

extern crate alloc;

use alloc::format;

use arbiter_policy_sdk::{Decision, Policy, Request, allow, forbidden};

struct PromptReview;

impl Policy for PromptReview {
    fn evaluate(req: Request) -> Decision {
        if req.kind() != "prompt" || !req.is_moving_to("PUBLISHED") {
            return allow();
        }
        match req.label("reviewed-by") {
            None | Some("") => forbidden(
                "REVIEW_REQUIRED",
                "a prompt is published only after review: have a reviewer set the label reviewed-by=<their principal>, then publish",
            )
            .violation("prompt.labels.reviewed-by", "required to publish")
            .into(),
            Some(reviewer) if reviewer == req.principal => forbidden(
                "SELF_REVIEW",
                &format!("{reviewer} cannot review their own publication: ask another principal to review and set reviewed-by"),
            )
            .violation("prompt.labels.reviewed-by", "must name someone other than the publisher")
            .into(),
            Some(_) => allow(),
        }
    }
}

arbiter_policy_sdk::export_policy!(PromptReview);
