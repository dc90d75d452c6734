//! What the router knows about one request, gathered by the earlier pipeline steps.

/// Facts about a request; every field is optional in spirit (zero, empty or `None` means
/// "not known"), so a caller fills in only what it has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFacts {
    /// Counted input tokens.
    pub input_tokens: u64,
    /// The request's output token cap (`max_tokens`), used for context-window and cost checks.
    pub max_output_tokens: Option<u64>,
    /// The model name or alias the caller asked for.
    pub model: Option<String>,
    /// Labels of the API key and of the request (for example from `x-aiofast-tags`).
    pub tags: Vec<String>,
    /// Stable user id; the subject of experiments by default.
    pub user: Option<String>,
    /// Stable key id (a digest, never the secret); the subject of key-sticky experiments.
    pub key: Option<String>,
    pub user_tier: Option<String>,
    pub has_tools: bool,
    pub has_images: bool,
    pub has_json_schema: bool,
    /// Names from guardrail `route` verdicts.
    pub guard_routes: Vec<String>,
    /// Smallest remaining budget over the request's scopes, in dollars.
    pub budget_remaining_usd: Option<f64>,
    /// The limits layer asked for a cheaper route.
    pub downgrade: bool,
    /// Deployments the limits layer reports as over their own rate limits.
    pub over_limit: Vec<String>,
    /// Hashed for experiments when the request has neither user nor key (not sticky).
    pub request_id: Option<String>,
}
