//! Cluster mode: a Kubernetes service-account token (projected with audience `istio-ca`) is
//! checked by the API server's TokenReview. The review must say the token is authenticated,
//! for the expected audience, and for a user `system:serviceaccount:<ns>:<sa>`; the pod name
//! comes from the token's `authentication.kubernetes.io/pod-name` claim when present.

use super::authn::{AuthError, Authenticator, Caller};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};

/// The audience Istio's injected tokens carry.
pub const ISTIO_CA_AUDIENCE: &str = "istio-ca";

/// Checks tokens with the API server's TokenReview.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    client: kube::Client,
    audiences: Vec<String>,
}

impl TokenReviewAuthenticator {
    /// Reviews through `client`, requiring audience `istio-ca`.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            audiences: vec![ISTIO_CA_AUDIENCE.to_string()],
        }
    }

    /// Requires these audiences instead (any one of them).
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        self.audiences = audiences;
        self
    }
}

/// The identity a TokenReview status grants, given the audiences asked for.
pub fn caller_of(status: &TokenReviewStatus, audiences: &[String]) -> Result<Caller, AuthError> {
    if let Some(e) = status.error.as_deref().filter(|e| !e.is_empty()) {
        return Err(AuthError::Rejected(e.to_string()));
    }
    if status.authenticated != Some(true) {
        return Err(AuthError::Rejected(
            "the API server did not authenticate the token".into(),
        ));
    }
    // The server echoes the audiences the token is valid for, among those asked.
    if let Some(got) = &status.audiences
        && !audiences.is_empty()
        && !got.iter().any(|a| audiences.contains(a))
    {
        return Err(AuthError::Rejected(format!(
            "token audiences {got:?} include none of {audiences:?}"
        )));
    }
    let user = status
        .user
        .as_ref()
        .ok_or_else(|| AuthError::Rejected("the review names no user".into()))?;
    let username = user.username.as_deref().unwrap_or_default();
    let mut parts = username.split(':');
    let (Some("system"), Some("serviceaccount"), Some(ns), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(AuthError::Rejected(format!(
            "{username:?} is not a service account"
        )));
    };
    if ns.is_empty() || sa.is_empty() {
        return Err(AuthError::Rejected(format!(
            "{username:?} is not a service account"
        )));
    }
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
        .and_then(|v| v.first())
        .cloned();
    Ok(Caller {
        namespace: ns.to_string(),
        service_account: sa.to_string(),
        pod,
    })
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing("no bearer token".into()));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let status = answer
            .status
            .ok_or_else(|| AuthError::Unavailable("TokenReview without a status".into()))?;
        caller_of(&status, &self.audiences)
    }

    fn name(&self) -> &'static str {
        "token-review"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn status(
        authenticated: bool,
        user: &str,
        audiences: Option<Vec<&str>>,
        error: Option<&str>,
    ) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: audiences.map(|a| a.into_iter().map(String::from).collect()),
            error: error.map(String::from),
            user: Some(UserInfo {
                username: Some(user.into()),
                extra: Some(
                    [(
                        "authentication.kubernetes.io/pod-name".to_string(),
                        vec!["redis-0".to_string()],
                    )]
                    .into(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn review_table() {
        let aud = vec![ISTIO_CA_AUDIENCE.to_string()];
        let sa = "system:serviceaccount:default:redis";
        let cases: Vec<(&str, TokenReviewStatus, bool)> = vec![
            (
                "valid",
                status(true, sa, Some(vec!["istio-ca"]), None),
                true,
            ),
            ("no audiences echoed", status(true, sa, None, None), true),
            ("not authenticated", status(false, sa, None, None), false),
            ("error", status(true, sa, None, Some("expired")), false),
            (
                "wrong audience",
                status(true, sa, Some(vec!["api"]), None),
                false,
            ),
            ("a user", status(true, "alice", None, None), false),
            ("a node", status(true, "system:node:n1", None, None), false),
            (
                "empty account",
                status(true, "system:serviceaccount:default:", None, None),
                false,
            ),
        ];
        for (what, st, ok) in cases {
            let got = caller_of(&st, &aud);
            assert_eq!(got.is_ok(), ok, "{what}: {got:?}");
            if let Ok(c) = got {
                assert_eq!(
                    (
                        c.namespace.as_str(),
                        c.service_account.as_str(),
                        c.pod.as_deref()
                    ),
                    ("default", "redis", Some("redis-0"))
                );
            }
        }
    }
}
