//! The learned classifier as a check: the message's spam probability becomes one of the
//! `BAYES_*` symbols. Silent until the model learned enough of both kinds.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Check, Context, Outcome, Phase};
use crate::bayes::Model;

pub struct Bayes {
    model: Arc<Model>,
}

impl Bayes {
    pub fn new(model: Arc<Model>) -> Bayes {
        Bayes { model }
    }
}

#[async_trait]
impl Check for Bayes {
    fn name(&self) -> &'static str {
        "bayes"
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Data]
    }

    async fn check(&self, ctx: &Context<'_>) -> anyhow::Result<Outcome> {
        let Some(message) = ctx.message else {
            return Ok(Outcome::default());
        };
        Ok(match self.model.probability(message).await? {
            Some(p) => vec![crate::bayes::symbol(p)].into(),
            None => Outcome::default(),
        })
    }
}
