//! `webhook:URL`: a POST of the alert as JSON; any 2xx answer is delivery.

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Notifier, NotifyError};

/// One webhook target.
pub(crate) struct Webhook {
    url: String,
    client: reqwest::Client,
}

impl Webhook {
    /// A target posting to `url`.
    pub(crate) fn new(url: &str) -> Result<Self, NotifyError> {
        Ok(Webhook {
            url: url.to_owned(),
            client: super::http_client()?,
        })
    }
}

impl Notifier for Webhook {
    fn deliver<'a>(
        &'a self,
        alert: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), NotifyError>> {
        async move { super::post_json(&self.client, &self.url, alert).await }.boxed()
    }
}
