//! Connectors: the kinds parley speaks to, their settings (which are secret, which have the
//! public service as their default) and where each stands.

use serde_json::{Map, Value};

use super::{Invalid, word_enum};

word_enum!(
    /// The system a connector speaks to.
    ConnectorType, "connector type" {
        Microsoft365Mail => "microsoft365_mail",
        Gmail => "gmail",
        Archive => "archive",
        Sharepoint => "sharepoint",
        GoogleDrive => "google_drive",
        Box => "box",
        Dropbox => "dropbox",
        Salesforce => "salesforce",
        Dynamics365 => "dynamics365",
        Hubspot => "hubspot",
    }
);

word_enum!(
    /// Where a connector stands: working, failing (`lastError` says why), or waiting for
    /// an administrator to grant access again.
    ConnectorStatus, "connector status" {
        Active => "active",
        Failing => "failing",
        ReauthorizationRequired => "reauthorization_required",
    }
);

word_enum!(
    /// What became of a case's folder on a document system when its debtor was erased:
    /// deleted, or failed (tried again every round until it is deleted).
    RemoteCopyStatus, "remote copy status" {
        Deleted => "deleted",
        Failed => "failed",
    }
);

/// What a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// An `http(s)://` base URL, kept without its trailing `/`.
    Url,
    Bool,
    /// A Google service account's JSON key, as the file's text or as an object.
    ServiceAccount,
    /// A mail server's URL with its credentials: `imap[s]://` or `smtp[s]://`.
    MailUrl,
    /// A folder's path under a drive's root: names joined by `/`, none of them empty, `.`,
    /// `..` or holding a character the document systems refuse.
    Folder,
    /// A PEM PKCS#8 RSA private key (`BEGIN PRIVATE KEY`), up to 16 KiB.
    PrivateKey,
    /// A name in a service's schema (an object, a field, a property): letters, digits, `_`
    /// and `-`, not starting with `-`; it is written into the service's queries.
    Name,
}

/// One setting of a connector type.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// Sealed at rest and never shown (`"***"`).
    pub secret: bool,
    /// Taken when the setting is not given; none: the setting must be given (unless
    /// `optional`).
    pub default: Option<&'static str>,
    /// May be left out: what needs it says so (the archive's target decides).
    pub optional: bool,
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        secret: false,
        default: None,
        optional: false,
    }
}

const fn secret(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        secret: true,
        default: None,
        optional: false,
    }
}

const fn optional(field: Field) -> Field {
    Field {
        optional: true,
        ..field
    }
}

const fn or(name: &'static str, kind: Kind, default: &'static str) -> Field {
    Field {
        name,
        kind,
        secret: false,
        default: Some(default),
        optional: false,
    }
}

const MICROSOFT365_MAIL: &[Field] = &[
    field("tenantId", Kind::Text),
    field("clientId", Kind::Text),
    secret("clientSecret", Kind::Text),
    field("mailbox", Kind::Text),
    or("graphUrl", Kind::Url, "https://graph.microsoft.com"),
    or("loginUrl", Kind::Url, "https://login.microsoftonline.com"),
    or("outbound", Kind::Bool, "true"),
];

const GMAIL: &[Field] = &[
    secret("serviceAccount", Kind::ServiceAccount),
    field("user", Kind::Text),
    or("apiUrl", Kind::Url, "https://gmail.googleapis.com"),
    or("outbound", Kind::Bool, "true"),
];

const ARCHIVE: &[Field] = &[
    field("target", Kind::Text),
    optional(secret("url", Kind::MailUrl)),
    optional(field("journalAddress", Kind::Text)),
];

const SHAREPOINT: &[Field] = &[
    field("tenantId", Kind::Text),
    field("clientId", Kind::Text),
    secret("clientSecret", Kind::Text),
    field("driveId", Kind::Text),
    or("folder", Kind::Folder, "parley"),
    or("graphUrl", Kind::Url, "https://graph.microsoft.com"),
    or("loginUrl", Kind::Url, "https://login.microsoftonline.com"),
];

const GOOGLE_DRIVE: &[Field] = &[
    secret("serviceAccount", Kind::ServiceAccount),
    field("folderId", Kind::Text),
    or("apiUrl", Kind::Url, "https://www.googleapis.com"),
];

const BOX: &[Field] = &[
    field("clientId", Kind::Text),
    secret("clientSecret", Kind::Text),
    optional(field("enterpriseId", Kind::Text)),
    optional(field("userId", Kind::Text)),
    or("folderId", Kind::Text, "0"),
    or("apiUrl", Kind::Url, "https://api.box.com"),
    or("uploadUrl", Kind::Url, "https://upload.box.com/api"),
];

const DROPBOX: &[Field] = &[
    field("appKey", Kind::Text),
    secret("appSecret", Kind::Text),
    secret("refreshToken", Kind::Text),
    optional(field("teamMemberId", Kind::Text)),
    or("folder", Kind::Folder, "parley"),
    or("apiUrl", Kind::Url, "https://api.dropboxapi.com"),
    or("contentUrl", Kind::Url, "https://content.dropboxapi.com"),
];

const SALESFORCE: &[Field] = &[
    or("loginUrl", Kind::Url, "https://login.salesforce.com"),
    field("clientId", Kind::Text),
    field("username", Kind::Text),
    secret("privateKey", Kind::PrivateKey),
    or("object", Kind::Name, "Case"),
    or("caseNumberField", Kind::Name, "Parley_Case_Number__c"),
    or("externalIdField", Kind::Name, "Parley_Message_Id__c"),
    or("statusField", Kind::Name, "Parley_Status__c"),
    or("paidField", Kind::Name, "Parley_Paid__c"),
    or("updateRecord", Kind::Bool, "true"),
];

const DYNAMICS365: &[Field] = &[
    field("tenantId", Kind::Text),
    field("clientId", Kind::Text),
    secret("clientSecret", Kind::Text),
    field("environmentUrl", Kind::Url),
    or("loginUrl", Kind::Url, "https://login.microsoftonline.com"),
    or("table", Kind::Name, "incident"),
    or("caseNumberColumn", Kind::Name, "parley_casenumber"),
    or("statusColumn", Kind::Name, "parley_status"),
    or("paidColumn", Kind::Name, "parley_paid"),
    or("updateRecord", Kind::Bool, "true"),
];

const HUBSPOT: &[Field] = &[
    secret("accessToken", Kind::Text),
    or("apiUrl", Kind::Url, "https://api.hubapi.com"),
    or("objectType", Kind::Name, "deals"),
    or("caseNumberProperty", Kind::Name, "parley_case_number"),
    or("messageIdProperty", Kind::Name, "parley_message_id"),
    or("statusProperty", Kind::Name, "parley_status"),
    or("paidProperty", Kind::Name, "parley_paid"),
    or("updateRecord", Kind::Bool, "true"),
];

/// Where an archive connector journals each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveTarget {
    /// APPEND to the mailbox of `url` (`imap[s]://user:pass@host/Mailbox`).
    Imap,
    /// To `journalAddress` through the server of `url`, the original attached.
    Smtp,
    /// As an `.eml` document of the message's case.
    Documents,
}

impl ArchiveTarget {
    /// The target the settings name, with what it needs there and nothing it does not.
    pub fn of(settings: &Settings) -> Result<Self, Invalid> {
        let url = settings.text("url");
        let scheme = url.split("://").next().unwrap_or_default();
        let journal = settings.text("journalAddress");
        let target = match settings.text("target") {
            "imap" => Self::Imap,
            "smtp" => Self::Smtp,
            "documents" => Self::Documents,
            other => {
                return Err(Invalid::new(format!(
                    "settings.target {other:?} is not one of imap, smtp, documents"
                )));
            }
        };
        let fits = match target {
            Self::Imap => matches!(scheme, "imap" | "imaps") && journal.is_empty(),
            Self::Smtp => {
                matches!(scheme, "smtp" | "smtps")
                    && super::recipient::EmailAddress::parse(journal).is_ok()
            }
            Self::Documents => url.is_empty() && journal.is_empty(),
        };
        if !fits {
            return Err(Invalid::new(match target {
                Self::Imap => {
                    "the imap target takes settings.url imap[s]://user:pass@host/Mailbox and no journalAddress"
                }
                Self::Smtp => {
                    "the smtp target takes settings.url smtp[s]://[user:pass@]host[:port] and settings.journalAddress, an email address"
                }
                Self::Documents => {
                    "the documents target takes neither settings.url nor settings.journalAddress"
                }
            }));
        }
        Ok(target)
    }
}

/// The characters no document system takes in a file's or folder's name.
pub const REFUSED_IN_NAMES: &[char] = &['"', '*', ':', '<', '>', '?', '\\', '|', '/'];

/// The longest folder path a setting names.
const MAX_FOLDER: usize = 400;

/// A name a document system takes for a folder: not empty, no refused or C0 control character,
/// not starting with a space, not ending with a space or a dot (so never `.` or `..`).
fn folder_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c < ' ' || REFUSED_IN_NAMES.contains(&c))
        && !name.starts_with(' ')
        && !name.ends_with([' ', '.'])
}

/// What a secret setting shows in every answer.
pub const HIDDEN: &str = "***";

/// The longest value of a text or URL setting; a service account key may be 16 KiB.
const MAX_TEXT: usize = 2_000;
const MAX_KEY: usize = 16 * 1024;

impl ConnectorType {
    /// Its settings: the contract's names, the public services' base URLs as defaults, and
    /// `outbound` (mail of the cases in scope leaves through the mailbox; default true).
    pub fn fields(self) -> &'static [Field] {
        match self {
            Self::Microsoft365Mail => MICROSOFT365_MAIL,
            Self::Gmail => GMAIL,
            Self::Archive => ARCHIVE,
            Self::Sharepoint => SHAREPOINT,
            Self::GoogleDrive => GOOGLE_DRIVE,
            Self::Box => BOX,
            Self::Dropbox => DROPBOX,
            Self::Salesforce => SALESFORCE,
            Self::Dynamics365 => DYNAMICS365,
            Self::Hubspot => HUBSPOT,
        }
    }

    /// Whether it is a mailbox, synced and carrying mail (not an archive).
    pub fn is_mailbox(self) -> bool {
        matches!(self, Self::Microsoft365Mail | Self::Gmail)
    }

    /// Whether it is a document system: the documents of its cases mirrored into a folder
    /// per case, and files put there taken in.
    pub fn is_drive(self) -> bool {
        matches!(
            self,
            Self::Sharepoint | Self::GoogleDrive | Self::Box | Self::Dropbox
        )
    }

    /// Whether it is a CRM: every message of its cases logged as an activity on the case's
    /// record (or its debtor's contact), and the record kept up to date.
    pub fn is_crm(self) -> bool {
        matches!(self, Self::Salesforce | Self::Dynamics365 | Self::Hubspot)
    }

    /// The setting that names the mailbox: changing it starts the sync from the beginning.
    pub fn mailbox_field(self) -> &'static str {
        match self {
            Self::Microsoft365Mail => "mailbox",
            Self::Gmail => "user",
            Self::Archive => "url",
            Self::Sharepoint => "driveId",
            Self::GoogleDrive | Self::Box => "folderId",
            Self::Dropbox => "folder",
            Self::Salesforce => "object",
            Self::Dynamics365 => "table",
            Self::Hubspot => "objectType",
        }
    }
}

/// The connector whose mailbox carried a message, in or out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Carrier {
    #[schema(value_type = String)]
    pub connector_id: super::ConnectorId,
    #[serde(rename = "type")]
    pub kind: ConnectorType,
}

/// A connector's settings, checked: what may be shown, and the secrets.
#[derive(Clone, Default, PartialEq)]
pub struct Settings {
    pub public: Map<String, Value>,
    pub secrets: Map<String, Value>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("public", &self.public)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Settings {
    /// Checks `given` against the type's fields: no unknown setting, every required one
    /// there, each of its kind; defaults filled in. `earlier` (an update) supplies what is
    /// not given, and a secret given as `"***"` keeps its earlier value.
    pub fn check(
        kind: ConnectorType,
        given: &Map<String, Value>,
        earlier: Option<&Settings>,
    ) -> Result<Self, Invalid> {
        if let Some(unknown) = given
            .keys()
            .find(|k| !kind.fields().iter().any(|f| f.name == k.as_str()))
        {
            let known: Vec<&str> = kind.fields().iter().map(|f| f.name).collect();
            return Err(Invalid::new(format!(
                "settings.{unknown} is not a setting of {kind}: expected {}",
                known.join(", ")
            )));
        }
        // Secrets go only where they went: a base URL changed, a kept secret ("***" or
        // absent) would be sent somewhere new, so it must be given again.
        if let Some(before) = earlier {
            let moved: Vec<&str> = kind
                .fields()
                .iter()
                .filter(|f| f.kind == Kind::Url)
                .filter(|f| {
                    given.get(f.name).is_some_and(|v| {
                        v.as_str().map(|s| s.trim().trim_end_matches('/'))
                            != before.public.get(f.name).and_then(Value::as_str)
                    })
                })
                .map(|f| f.name)
                .collect();
            let kept = kind.fields().iter().find(|f| {
                f.secret
                    && match given.get(f.name) {
                        None | Some(Value::Null) => true,
                        Some(Value::String(s)) => s == HIDDEN,
                        Some(_) => false,
                    }
            });
            if let (Some(url), Some(secret)) = (moved.first(), kept) {
                return Err(Invalid::new(format!(
                    "settings.{} must be given again when settings.{url} changes",
                    secret.name
                )));
            }
        }
        let mut out = Settings::default();
        for f in kind.fields() {
            let before = earlier.and_then(|e| {
                if f.secret {
                    e.secrets.get(f.name)
                } else {
                    e.public.get(f.name)
                }
            });
            let value = match given.get(f.name) {
                Some(Value::String(s)) if f.secret && s == HIDDEN && before.is_some() => {
                    before.cloned()
                }
                Some(Value::Null) | None => before.cloned(),
                Some(v) => Some(checked(f, v)?),
            };
            let value = match (value, f.default) {
                (Some(v), _) => v,
                (None, Some(default)) if f.kind == Kind::Bool => Value::Bool(default == "true"),
                (None, Some(default)) => checked(f, &Value::String(default.into()))?,
                (None, None) if f.optional => continue,
                (None, None) => {
                    return Err(Invalid::new(format!(
                        "settings.{} is required for {kind}",
                        f.name
                    )));
                }
            };
            if f.secret {
                out.secrets.insert(f.name.into(), value);
            } else {
                out.public.insert(f.name.into(), value);
            }
        }
        if kind == ConnectorType::Archive {
            ArchiveTarget::of(&out)?;
        }
        // Box's Client Credentials Grant acts for the enterprise's service account or for
        // one user: exactly one of the two.
        if kind == ConnectorType::Box
            && out.text("enterpriseId").is_empty() == out.text("userId").is_empty()
        {
            return Err(Invalid::new(
                "box takes exactly one of settings.enterpriseId and settings.userId",
            ));
        }
        Ok(out)
    }

    /// The settings as every answer shows them: secrets as `"***"`.
    pub fn shown(&self) -> Map<String, Value> {
        let mut shown = self.public.clone();
        for name in self.secrets.keys() {
            shown.insert(name.clone(), Value::String(HIDDEN.into()));
        }
        shown
    }

    /// A setting's text (public or secret); empty when there is none.
    pub fn text(&self, name: &str) -> &str {
        self.public
            .get(name)
            .or_else(|| self.secrets.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn flag(&self, name: &str) -> bool {
        self.public
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

fn checked(f: &Field, v: &Value) -> Result<Value, Invalid> {
    let name = f.name;
    let text = || {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Invalid::new(format!("settings.{name} must be a non-empty string")))
    };
    match f.kind {
        Kind::Text => {
            let s = text()?;
            if s.chars().count() > MAX_TEXT || s.chars().any(char::is_control) {
                return Err(Invalid::new(format!(
                    "settings.{name} must be at most {MAX_TEXT} characters, none of them control characters"
                )));
            }
            Ok(Value::String(s.into()))
        }
        Kind::Url => {
            let s = text()?.trim_end_matches('/');
            let ok = url::Url::parse(s).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
            });
            if !ok || s.len() > MAX_TEXT {
                return Err(Invalid::new(format!(
                    "settings.{name} must be an http(s) base URL without query, fragment or user"
                )));
            }
            Ok(Value::String(s.into()))
        }
        Kind::MailUrl => {
            let s = text()?;
            let ok = url::Url::parse(s).is_ok_and(|u| {
                matches!(u.scheme(), "imap" | "imaps" | "smtp" | "smtps")
                    && u.host_str().is_some()
                    && u.fragment().is_none()
            });
            if !ok || s.len() > MAX_TEXT {
                return Err(Invalid::new(format!(
                    "settings.{name} must be an imap://, imaps://, smtp:// or smtps:// URL"
                )));
            }
            Ok(Value::String(s.into()))
        }
        Kind::Folder => {
            // Not trimmed: a name starting or ending with a space is refused, not changed.
            let s = v.as_str().unwrap_or_default();
            if s.chars().count() > MAX_FOLDER || !s.split('/').all(folder_name) {
                return Err(Invalid::new(format!(
                    "settings.{name} must be a folder's path: names joined by /, each starting with \
                     neither a space nor ending with a space or a dot, none holding \" * : < > ? \\ | \
                     or a control character, at most {MAX_FOLDER} characters in all"
                )));
            }
            Ok(Value::String(s.into()))
        }
        Kind::Bool => match v {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            _ => Err(Invalid::new(format!(
                "settings.{name} must be true or false"
            ))),
        },
        Kind::PrivateKey | Kind::Name => named(f.kind, name, text()?),
        Kind::ServiceAccount => {
            let key = match v {
                Value::String(s) => s.clone(),
                Value::Object(_) => v.to_string(),
                _ => String::new(),
            };
            if key.len() > MAX_KEY {
                return Err(Invalid::new(format!(
                    "settings.{name} is longer than {MAX_KEY} bytes"
                )));
            }
            ServiceAccount::parse(&key)
                .map_err(|e| Invalid::new(format!("settings.{name}: {}", e.0)))?;
            Ok(Value::String(key))
        }
    }
}

/// A private key's or a schema name's setting, checked.
fn named(kind: Kind, name: &str, s: &str) -> Result<Value, Invalid> {
    if kind == Kind::PrivateKey {
        if s.len() > MAX_KEY || !s.contains("-----BEGIN PRIVATE KEY-----") || pem_der(s).is_none() {
            return Err(Invalid::new(format!(
                "settings.{name} must be a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----) of at most {MAX_KEY} bytes"
            )));
        }
    } else if !schema_name(s) {
        return Err(Invalid::new(format!(
            "settings.{name} must be a name of at most 100 letters, digits, _ and -, not starting with -"
        )));
    }
    Ok(Value::String(s.into()))
}

/// A name a setting gives in a service's schema: written into queries, so nothing else.
pub fn schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The DER bytes of a PEM block.
pub fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let inner: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(inner).ok()
}

/// A Google service account's JSON key: the parts the JWT bearer grant needs.
#[derive(Clone, serde::Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    pub fn parse(json: &str) -> Result<Self, Invalid> {
        let key: Self = serde_json::from_str(json).map_err(|_| {
            Invalid::new(
                "must be a service account's JSON key with client_email, private_key and token_uri",
            )
        })?;
        if key.client_email.trim().is_empty()
            || key.client_email.chars().any(char::is_control)
            || !key.private_key.contains("BEGIN PRIVATE KEY")
            || !(key.token_uri.starts_with("https://") || key.token_uri.starts_with("http://"))
        {
            return Err(Invalid::new(
                "must hold a client_email, a PKCS#8 private_key (BEGIN PRIVATE KEY) and an http(s) token_uri",
            ));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_fill_in_secrets_are_apart_and_hidden() {
        let s = Settings::check(
            ConnectorType::Microsoft365Mail,
            &map(json!({"tenantId": "t", "clientId": "c", "clientSecret": "s3", "mailbox": "m@x.dk"})),
            None,
        )
        .unwrap();
        assert_eq!(s.text("graphUrl"), "https://graph.microsoft.com");
        assert_eq!(s.secrets["clientSecret"], "s3");
        assert!(!s.public.contains_key("clientSecret"));
        assert_eq!(s.shown()["clientSecret"], HIDDEN);
        assert!(s.flag("outbound"));
    }

    #[test]
    fn unknown_missing_and_malformed_settings_are_refused() {
        let kind = ConnectorType::Microsoft365Mail;
        let base = json!({"tenantId": "t", "clientId": "c", "clientSecret": "s", "mailbox": "m"});
        let mut unknown = map(base.clone());
        unknown.insert("colour".into(), json!("red"));
        assert!(Settings::check(kind, &unknown, None).is_err());
        let mut missing = map(base.clone());
        missing.remove("clientSecret");
        assert!(Settings::check(kind, &missing, None).is_err());
        for bad in ["ftp://x", "https://x/?q=1", "not a url", "https://u:p@x"] {
            let mut m = map(base.clone());
            m.insert("graphUrl".into(), json!(bad));
            assert!(Settings::check(kind, &m, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_update_keeps_a_secret_given_as_stars() {
        let kind = ConnectorType::Microsoft365Mail;
        let first = Settings::check(
            kind,
            &map(json!({"tenantId": "t", "clientId": "c", "clientSecret": "s", "mailbox": "m"})),
            None,
        )
        .unwrap();
        let next = Settings::check(
            kind,
            &map(json!({"clientSecret": "***", "mailbox": "n"})),
            Some(&first),
        )
        .unwrap();
        assert_eq!(next.secrets["clientSecret"], "s");
        assert_eq!(next.text("mailbox"), "n");
        assert_eq!(next.text("tenantId"), "t");
    }

    #[test]
    fn a_secret_is_given_again_when_where_it_goes_changes_and_never_printed() {
        let kind = ConnectorType::Microsoft365Mail;
        let first = Settings::check(
            kind,
            &map(
                json!({"tenantId": "t", "clientId": "c", "clientSecret": "s3cr3t", "mailbox": "m"}),
            ),
            None,
        )
        .unwrap();
        for kept in [json!("***"), Value::Null] {
            let moved = map(json!({"loginUrl": "https://attacker.example", "clientSecret": kept}));
            let refused = Settings::check(kind, &moved, Some(&first)).unwrap_err();
            assert!(refused.0.contains("clientSecret"), "{}", refused.0);
        }
        let mut given = map(json!({"loginUrl": "https://login.microsoftonline.us"}));
        given.insert("clientSecret".into(), json!("new"));
        assert!(Settings::check(kind, &given, Some(&first)).is_ok());
        // The same URL again is no move.
        let same = map(json!({"graphUrl": "https://graph.microsoft.com/"}));
        assert!(Settings::check(kind, &same, Some(&first)).is_ok());
        assert!(!format!("{first:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_service_account_needs_its_key_and_token_uri() {
        let kind = ConnectorType::Gmail;
        let good = json!({"client_email": "a@b.iam.gserviceaccount.com",
            "private_key": "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n",
            "token_uri": "https://oauth2.googleapis.com/token"});
        assert!(
            Settings::check(
                kind,
                &map(json!({"serviceAccount": good, "user": "u@x.dk"})),
                None
            )
            .is_ok()
        );
        assert!(
            Settings::check(
                kind,
                &map(json!({"serviceAccount": "{}", "user": "u@x.dk"})),
                None
            )
            .is_err()
        );
    }
}
