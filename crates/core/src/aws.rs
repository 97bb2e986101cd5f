//! The one place that talks to AWS: clients, role assumption, and the
//! translation of SDK errors into [`PhaseError`] kinds.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_types::region::Region;
use aws_types::sdk_config::SdkConfig;

use crate::phase::PhaseError;
use crate::pinning::Pinning;
use crate::settings::SettingsError;

/// The caller's own AWS configuration (the Lambda's role, or the CLI user).
#[derive(Clone, Debug)]
pub struct Aws {
    base: SdkConfig,
    pinning: Pinning,
    sessions: Sessions,
    /// The deploy lease table a deploy's phases check before they act
    /// (the fence), when they run in an installation.
    fence: Option<String>,
}

/// The deployment-role sessions this caller holds, shared by its clones.
///
/// A phase acts in every region of its input at once, and each region asks
/// for clients acting as its role: without this, one AssumeRole per region
/// per call, for what is nearly always one role. STS credentials are valid
/// in every region, so the regions (and, in a warm Lambda, the calls that
/// follow) share a session while it has [`SESSION_MARGIN`] left.
#[derive(Clone, Debug, Default)]
struct Sessions(Arc<tokio::sync::Mutex<HashMap<SessionKey, Arc<tokio::sync::OnceCell<Credentials>>>>>);

/// What a session is asked for with: the role, the session's name and its
/// tags (which the role's policy compares with what it may touch).
type SessionKey = (String, String, Vec<(String, String)>);

/// A session is used only while it outlives the longest function run
/// (Lambda's limit, 15 minutes) with room to spare: a call never starts
/// with credentials that can expire under it.
const SESSION_MARGIN: Duration = Duration::from_secs(20 * 60);

impl Sessions {
    /// The session for `key`: the one held while it has the margin left,
    /// else a new one from `assume`. Callers that ask at once share one
    /// AssumeRole; a failed one is not kept, so the next caller tries again.
    async fn get<F, Fut>(&self, key: SessionKey, assume: F) -> Result<Credentials, PhaseError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Credentials, PhaseError>>,
    {
        let cell = {
            let mut held = self.0.lock().await;
            let fresh = |c: &Credentials| c.expiry().is_some_and(|at| at > SystemTime::now() + SESSION_MARGIN);
            match held.get(&key) {
                Some(cell) if cell.get().is_none_or(fresh) => cell.clone(),
                _ => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    held.insert(key, cell.clone());
                    cell
                }
            }
        };
        cell.get_or_try_init(assume).await.cloned()
    }
}

/// Clients for one region, acting as the config's deployment role there.
#[derive(Clone, Debug)]
pub struct RegionClients {
    pub region: String,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub elb: aws_sdk_elasticloadbalancing::Client,
    /// Application and Network Load Balancers' target groups.
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// S3 in this region: for this region's buckets only. S3 answers a
    /// request for a bucket of another region with `301 PermanentRedirect`,
    /// which the SDK does not follow: [`RegionClients::s3_in`] reaches a
    /// bucket elsewhere with the same credentials.
    pub s3: aws_sdk_s3::Client,
    conf: SdkConfig,
    /// Target groups described by name (ARN, type, VPC, port, load
    /// balancers: none of it changes within a call), so a phase that reads
    /// a group's tags, health and registrations describes it once.
    pub(crate) target_groups:
        Arc<std::sync::Mutex<HashMap<String, aws_sdk_elasticloadbalancingv2::types::TargetGroup>>>,
}

impl Aws {
    /// The function's own configuration, from the variables Lambda sets in
    /// every execution environment: `AWS_REGION` and the role's credentials
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
    /// which stay valid for the environment's life. `AWS_ENDPOINT_URL`, when
    /// set, points every client at one endpoint (a local stack).
    ///
    /// Not the SDK's default chain (`aws-config`): in Lambda it ends at the
    /// environment anyway, and on its way it reads profile files and builds
    /// web-identity, container and instance-metadata providers, which cost
    /// every cold start CPU time and every bootstrap the code of all of
    /// them. The CLI, which must honour profiles and SSO, loads that chain
    /// itself and hands its config to [`Aws::new`].
    pub fn from_lambda_env(roots: Roots) -> Result<Aws, SettingsError> {
        Aws::from_vars(roots, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(roots: Roots, var: impl Fn(&str) -> Option<String>) -> Result<Aws, SettingsError> {
        let missing = |name: &'static str| SettingsError::Missing {
            name,
            why: "a function runs with the region and credentials Lambda puts in its environment",
        };
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .ok_or_else(|| missing("AWS_REGION"))?;
        let credentials = Credentials::new(
            var("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            var("AWS_SECRET_ACCESS_KEY").ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
            var("AWS_SESSION_TOKEN"),
            None,
            "lambda-environment",
        );
        let mut conf = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .retry_config(RetryConfig::standard())
            .http_client(http_client(roots));
        if let Some(endpoint) = var("AWS_ENDPOINT_URL") {
            conf = conf.endpoint_url(endpoint);
        }
        Ok(Aws::new(conf.build()))
    }

    /// A caller whose deploys are checked against the environment pins
    /// under the default path (see [`Aws::with_pinning`]).
    pub fn new(base: SdkConfig) -> Aws {
        Aws {
            base,
            pinning: Pinning::default(),
            sessions: Sessions::default(),
            fence: None,
        }
    }

    /// The same caller, whose deploy phases first check that their
    /// execution still holds the deploy lease in `table`.
    pub fn with_fence(mut self, table: impl Into<String>) -> Aws {
        self.fence = Some(table.into());
        self
    }

    /// The deploy lease table its phases check before they act, if any
    /// (the fence: the lease module checks it).
    pub fn fence(&self) -> Option<&str> {
        self.fence.as_deref()
    }

    /// A caller whose deploys nothing checks: a person's own credentials
    /// (the CLI), or a test that drives a phase directly.
    pub fn unpinned(base: SdkConfig) -> Aws {
        Aws::new(base).with_pinning(Pinning::Off)
    }

    /// The same caller, with its deploys checked against `pinning`.
    pub fn with_pinning(mut self, pinning: Pinning) -> Aws {
        self.pinning = pinning;
        self
    }

    pub fn pinning(&self) -> &Pinning {
        &self.pinning
    }

    /// SSM with the caller's own credentials (the environment pins).
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.base)
    }

    /// SSM in `region` with the caller's own credentials (the machine image
    /// parameter, which exists in every region).
    pub fn ssm_in(&self, region: &str) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.base.to_builder().region(Region::new(region.to_owned())).build())
    }

    pub fn sdk_config(&self) -> &SdkConfig {
        &self.base
    }

    /// S3 with the caller's own credentials (the pipeline's artifact bucket).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.base)
    }

    /// The caller's own region: where the installation, its artifact
    /// bucket and its state machine live.
    pub fn home_region(&self) -> Option<&str> {
        self.base.region().map(|r| r.as_ref())
    }

    /// Clients for `region` with the caller's own credentials: for reading
    /// what is deployed (`porter status`), never for changing it.
    pub fn own_region(&self, region: &str) -> RegionClients {
        RegionClients::new(
            region,
            &self.base.to_builder().region(Region::new(region.to_owned())).build(),
        )
    }

    /// Assumes `role_arn` and returns clients for `region` acting as it.
    /// porter always worked this way: the invoker's role only needs
    /// sts:AssumeRole, the deployment role (maybe in another account) holds
    /// the CloudFormation, EC2 and ELB rights. `session_tags` become the
    /// session's principal tags, which the deployment role's policy
    /// compares with the tags of the stacks and ELBs it may touch. Regions
    /// that name the same role share its session (see [`Sessions`]).
    pub async fn region(
        &self,
        region: &str,
        role_arn: &str,
        session: &str,
        session_tags: &[(&str, &str)],
    ) -> Result<RegionClients, PhaseError> {
        let session: String = name_of(session, "=,.@-_").chars().take(64).collect();
        let session = if session.len() < 2 {
            "porter".to_owned()
        } else {
            session
        };
        let key = (
            role_arn.to_owned(),
            session.clone(),
            session_tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let creds = self
            .sessions
            .get(key, || self.assume(role_arn, session, session_tags, region))
            .await?;
        let conf = self
            .base
            .to_builder()
            .region(Region::new(region.to_owned()))
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .build();
        Ok(RegionClients::new(region, &conf))
    }

    /// One AssumeRole of `role_arn`, as `session` with `session_tags`.
    async fn assume(
        &self,
        role_arn: &str,
        session: String,
        session_tags: &[(&str, &str)],
        region: &str,
    ) -> Result<Credentials, PhaseError> {
        let out = aws_sdk_sts::Client::new(&self.base)
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session)
            .set_tags(if session_tags.is_empty() {
                None
            } else {
                Some(
                    session_tags
                        .iter()
                        .map(|(k, v)| {
                            aws_sdk_sts::types::Tag::builder()
                                .key(*k)
                                .value(*v)
                                .build()
                                .expect("key and value are set")
                        })
                        .collect(),
                )
            })
            .send()
            .await
            .map_err(|e| classify(&format!("assume role {role_arn} for {region}"), e))?;
        let c = out
            .credentials()
            .ok_or_else(|| PhaseError::Aws(format!("assume role {role_arn}: STS returned no credentials")))?;
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            SystemTime::try_from(*c.expiration()).ok(),
            "porter-deployment-role",
        ))
    }
}

/// What the SDK reads off the wire with every service error: its code. A
/// mocked error needs it, as the code is what porter tells errors by.
#[cfg(test)]
pub(crate) fn error_code(code: &str) -> aws_smithy_types::error::ErrorMetadata {
    aws_smithy_types::error::ErrorMetadata::builder()
        .code(code)
        .message(format!("{code} (mocked)"))
        .build()
}

impl RegionClients {
    /// Clients that reach nowhere, for a test to swap in the mocked ones
    /// it needs (see [`error_code`]).
    #[cfg(test)]
    pub(crate) fn unconfigured(region: &str) -> RegionClients {
        let conf = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .build();
        RegionClients::new(region, &conf)
    }

    /// Every client a phase uses in `region`, from one configuration.
    fn new(region: &str, conf: &SdkConfig) -> RegionClients {
        RegionClients {
            region: region.to_owned(),
            cloudformation: aws_sdk_cloudformation::Client::new(conf),
            elb: aws_sdk_elasticloadbalancing::Client::new(conf),
            elbv2: aws_sdk_elasticloadbalancingv2::Client::new(conf),
            autoscaling: aws_sdk_autoscaling::Client::new(conf),
            cloudwatch: aws_sdk_cloudwatch::Client::new(conf),
            s3: s3_client(conf),
            conf: conf.clone(),
            target_groups: Arc::default(),
        }
    }

    /// S3 in `region` with these clients' credentials: for a bucket that
    /// lives there (the artifact bucket, in the installation's region).
    pub fn s3_in(&self, region: &str) -> aws_sdk_s3::Client {
        if region == self.region {
            return self.s3.clone();
        }
        s3_client(&self.conf.to_builder().region(Region::new(region.to_owned())).build())
    }
}

/// The certificate authorities a client trusts for HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// The machine's store: the CLI and the local stack, which may run
    /// behind a proxy with a CA of its own.
    System,
    /// Only Amazon Trust Services, the roots of every AWS endpoint's
    /// certificate, compiled in: the functions. They talk to AWS and
    /// nothing else, and reading and parsing the system's 140-odd roots is
    /// most of a cold start (and again for every SDK client made).
    AmazonTrustServices,
}

/// Amazon Root CA 1 to 4 and Starfield Services Root CA G2, as AWS lists them.
const AMAZON_TRUST_SERVICES: &[u8] = include_bytes!("amazon-trust-services.pem");

/// The HTTP(S) client every SDK config here uses: rustls with the ring
/// provider. The SDK's default (rustls on aws-lc) is the same protocol
/// stack, but aws-lc adds minutes to a cold build and megabytes to every
/// function's bootstrap. Plain `http://` endpoints (the local stack) work too.
pub fn http_client(roots: Roots) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider, TlsContext, TrustStore};
    let builder = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring));
    match roots {
        Roots::System => builder.build_https(),
        Roots::AmazonTrustServices => builder
            .tls_context(
                TlsContext::builder()
                    .with_trust_store(
                        TrustStore::empty()
                            .with_native_roots(false)
                            .with_pem_certificate(AMAZON_TRUST_SERVICES),
                    )
                    .build()
                    .expect("a trust store of PEM certificates only"),
            )
            .build_https(),
    }
}

/// Path-style addressing when an endpoint is overridden (the local stack):
/// virtual-host names like `bucket.127.0.0.1` do not resolve.
fn s3_client(conf: &SdkConfig) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::config::Builder::from(conf);
    if conf.endpoint_url().is_some() {
        b = b.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

const RETRYABLE_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "RequestTimeout",
];
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
];

/// The most of AWS's message an error line carries: some messages list
/// every valid value (an unknown availability zone lists all of them).
const MESSAGE_LIMIT: usize = 300;

/// `text` as an AWS name that allows ASCII letters, digits and `also`:
/// any other character becomes `-`.
pub fn name_of(text: &str, also: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || also.contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An error with its causes, outermost first: an HTTP client keeps the
/// cause (a refused connection, a timeout) apart from its own words.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

/// Cuts `s` to at most `n` bytes (on a character boundary), marking the cut.
pub fn clip(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut end = n.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One line for an SDK error: the call, AWS's code and AWS's message —
/// never the SDK's debug rendering of it.
pub fn describe<E>(what: &str, err: &SdkError<E, Response>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(se) => format!(
            "{what}: {} (HTTP {}): {}",
            err.code().unwrap_or("error"),
            se.raw().status().as_u16(),
            clip(err.message().unwrap_or("no message"), MESSAGE_LIMIT)
        ),
        _ => format!(
            "{what}: AWS did not answer ({})",
            clip(&DisplayErrorContext(err).to_string(), MESSAGE_LIMIT)
        ),
    }
}

/// Sorts an SDK error into the kind that tells the caller what to do next.
pub fn classify<E>(what: &str, err: SdkError<E, Response>) -> PhaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().unwrap_or_default().to_owned();
    let detail = clip(
        &err.message()
            .map(str::to_owned)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
        MESSAGE_LIMIT,
    );
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PhaseError::Retryable(format!("{what}: AWS did not answer ({detail}); retrying may help"))
        }
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            if RETRYABLE_CODES.contains(&code.as_str()) || status >= 500 {
                PhaseError::Retryable(format!("{what}: {code} (HTTP {status}): {detail}; retrying may help"))
            } else if code == "NoSuchBucket" {
                PhaseError::Invalid(format!(
                    "{what}: the bucket does not exist; create it (on the local stack `porter local bootstrap` does), or fix s3_bucket in .porter/config"
                ))
            } else if DENIED_CODES.contains(&code.as_str()) || status == 403 {
                PhaseError::AccessDenied(format!(
                    "{what}: access denied ({code}): {detail}; give the deployment role this permission"
                ))
            } else {
                PhaseError::Aws(format!("{what}: {code}: {detail}"))
            }
        }
        _ => PhaseError::Aws(format!("{what}: {detail}")),
    }
}

/// `classify` for use in `map_err`.
pub fn err<E>(what: impl Into<String>) -> impl FnOnce(SdkError<E, Response>) -> PhaseError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static + Debug,
{
    let what = what.into();
    move |e| classify(&what, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ssm::operation::get_parameter::GetParameterError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str, message: &str) -> SdkError<GetParameterError, Response> {
        let err = GetParameterError::generic(ErrorMetadata::builder().code(code).message(message).build());
        let raw = Response::new(400u16.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(err, raw)
    }

    #[test]
    fn the_functions_trust_the_five_amazon_trust_services_roots_and_each_parses() {
        let pem = std::str::from_utf8(AMAZON_TRUST_SERVICES).expect("text");
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 5);
        for name in [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
        ] {
            assert!(pem.contains(&format!("# {name}\n-----BEGIN")), "{name} is missing");
        }
        // Making a client builds its TLS settings at once (the SDK's
        // validate step), which panics on a root that does not parse.
        let conf = SdkConfig::builder()
            .http_client(http_client(Roots::AmazonTrustServices))
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        let _ = aws_sdk_ssm::Client::new(&conf);
    }

    #[tokio::test]
    async fn a_function_takes_its_region_credentials_and_endpoint_from_the_variables_lambda_sets() {
        use aws_credential_types::provider::ProvideCredentials;
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let aws = Aws::from_vars(
            Roots::AmazonTrustServices,
            vars(&[
                ("AWS_REGION", "eu-west-1"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_SESSION_TOKEN", "token"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ]),
        )
        .unwrap();
        let conf = aws.sdk_config();
        assert_eq!(conf.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(conf.endpoint_url(), Some("http://127.0.0.1:5000"));
        let creds = conf
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        assert_eq!(
            (creds.access_key_id(), creds.secret_access_key(), creds.session_token()),
            ("AKIDEXAMPLE", "secret", Some("token"))
        );
        // A client made from it validates (its HTTPS settings build).
        let _ = aws.s3();

        // Without an endpoint every client goes to AWS; the older region
        // variable is read when the newer one is absent.
        let aws = Aws::from_vars(
            Roots::AmazonTrustServices,
            vars(&[
                ("AWS_DEFAULT_REGION", "us-west-2"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
            ]),
        )
        .unwrap();
        assert_eq!(aws.sdk_config().region().map(|r| r.as_ref()), Some("us-west-2"));
        assert_eq!(aws.sdk_config().endpoint_url(), None);

        for (pairs, named) in [
            (
                &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")][..],
                "AWS_REGION",
            ),
            (
                &[("AWS_REGION", "us-east-1"), ("AWS_SECRET_ACCESS_KEY", "b")][..],
                "AWS_ACCESS_KEY_ID",
            ),
            (
                &[("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "a")][..],
                "AWS_SECRET_ACCESS_KEY",
            ),
        ] {
            let err = Aws::from_vars(Roots::AmazonTrustServices, vars(pairs)).unwrap_err();
            assert_eq!(err.variable(), named);
            assert!(err.to_string().starts_with(&format!("{named} is not set")), "{err}");
        }
    }

    #[test]
    fn an_aws_error_reads_as_one_line_with_the_call_code_and_a_clipped_message() {
        let zones = (0..300).map(|i| format!("zone-{i}")).collect::<Vec<_>>().join(", ");
        let e = service_error(
            "InvalidParameterValue",
            &format!("us-west-2z is invalid; use one of {zones}"),
        );
        let line = describe("create subnet", &e);
        assert!(
            line.starts_with("create subnet: InvalidParameterValue (HTTP 400): us-west-2z is invalid"),
            "{line}"
        );
        assert!(
            line.len() < 400 && !line.contains('\n') && !line.contains("Error {"),
            "{line}"
        );
        let kind = classify("create subnet", service_error("InvalidParameterValue", &zones));
        assert!(kind.to_string().len() < 400, "{kind}");
    }

    #[test]
    fn clip_keeps_within_its_bytes_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        let long = "é".repeat(2000);
        let c = clip(&long, 2048);
        assert!(c.len() <= 2048 && c.ends_with('…'), "{}", c.len());
        assert!(clip(&"x".repeat(5000), 2048).len() == 2048);
    }

    fn key(role: &str, tags: &[(&str, &str)]) -> SessionKey {
        (
            role.to_owned(),
            "porter-promote-web".to_owned(),
            tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        )
    }

    fn lasting(key_id: &str, for_secs: u64) -> Credentials {
        Credentials::new(
            key_id,
            "secret",
            Some("token".into()),
            Some(SystemTime::now() + Duration::from_secs(for_secs)),
            "test",
        )
    }

    #[tokio::test]
    async fn regions_that_name_one_role_share_one_session_and_a_failed_or_ending_one_is_asked_for_again() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let sessions = Sessions::default();
        let asked = AtomicUsize::new(0);
        let assume = |id: &'static str, secs: u64| {
            let asked = &asked;
            move || async move {
                asked.fetch_add(1, Ordering::SeqCst);
                // Slow enough that every region asks before the first answer.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(lasting(id, secs))
            }
        };
        let tags = [("porter:service", "web")];

        // Eight regions at once: one AssumeRole.
        let got = futures::future::join_all(
            (0..8).map(|_| sessions.get(key("arn:aws:iam::1:role/deploy", &tags), assume("first", 3600))),
        )
        .await;
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        assert!(got.iter().all(|c| c.as_ref().unwrap().access_key_id() == "first"));

        // Another role, or other tags, is another session.
        sessions
            .get(key("arn:aws:iam::2:role/deploy", &tags), assume("other-role", 3600))
            .await
            .unwrap();
        let other = sessions
            .get(
                key("arn:aws:iam::1:role/deploy", &[("porter:service", "api")]),
                assume("other-tags", 3600),
            )
            .await
            .unwrap();
        assert_eq!((asked.load(Ordering::SeqCst), other.access_key_id()), (3, "other-tags"));

        // A failed AssumeRole is not kept: the next caller asks again.
        let role = key("arn:aws:iam::3:role/deploy", &tags);
        let failed = sessions
            .get(role.clone(), || async { Err(PhaseError::Aws("AccessDenied".into())) })
            .await;
        assert!(failed.is_err());
        let again = sessions.get(role, assume("after-failure", 3600)).await.unwrap();
        assert_eq!(again.access_key_id(), "after-failure");

        // A session too close to its end for a whole function run is
        // replaced, and the new one is shared from then on.
        let ending = key("arn:aws:iam::4:role/deploy", &tags);
        sessions.get(ending.clone(), assume("ending", 600)).await.unwrap();
        let renewed = sessions.get(ending.clone(), assume("renewed", 3600)).await.unwrap();
        let kept = sessions.get(ending, assume("not-asked", 3600)).await.unwrap();
        assert_eq!((renewed.access_key_id(), kept.access_key_id()), ("renewed", "renewed"));
        assert_eq!(asked.load(Ordering::SeqCst), 6);
    }
}
