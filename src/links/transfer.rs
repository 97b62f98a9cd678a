//! Moving links in and out of a store: an NDJSON export (one link a line, every field of
//! [`Link`] by its own name, with its click total and daily counts) and an import of that
//! export, or of a CSV file with a header row as Shlink writes one.
//!
//! An import is resumable and idempotent: each line is written as one link with its
//! statistics as absolute values, and a link that is already there (same code, creation time
//! and URL) is set again rather than added to, so running an import twice, or again after it
//! was killed half way, imports nothing twice. A line that cannot be imported is reported and
//! skipped; none is half-written. A whole-store export (`kurz export`) opens with a line that
//! carries the keys kurz made for itself, the API keys (their secrets' digests) and the id
//! counter, so the new store makes the same owner fingerprints, its API keys keep working and
//! keep their links, and its counter starts past every code the old one generated.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::list::read_scopes;
use super::{LinkService, UrlPolicy, normalise_tags, normalise_title};
use crate::clock;
use crate::code::{hash_code, looks_like_code};
use crate::store::{
    ImportOutcome, Link, LinkStats, LinkStore, ListPosition, ListScope, StoreError, StoredKey,
};

/// The export's format version, in its first line.
pub const EXPORT_FORMAT: u32 = 1;
/// Links read from the store at a time while exporting (what an export holds in memory).
const EXPORT_PAGE: usize = 500;
/// Statistics read at once while exporting, and links written at once while importing.
const EXPORT_CONCURRENCY: usize = 16;
const IMPORT_CONCURRENCY: usize = 16;
/// Lines of an import read before they are written (what an import holds in memory).
const IMPORT_CHUNK: usize = 512;
/// The keys a whole-store export carries, by their stored names.
const CARRIED_SECRETS: &[&str] = &[crate::secrets::PERMUTATION_KEY, crate::secrets::OWNER_KEY];

/// The first line of a whole-store export.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportHeader {
    pub kurz_export: u32,
    /// The source's id counter: the target's is moved at least this far.
    pub next_id: u64,
    /// Stored keys by name, hex.
    pub secrets: BTreeMap<String, String>,
    /// The API keys (digests of their secrets, never the secrets), revoked ones included: the
    /// target's keys are the source's, and its links' owners still name them. Exports made
    /// before keys were stored have none.
    #[serde(default)]
    pub api_keys: Vec<StoredKey>,
}

/// One exported link: the link's own fields, then its clicks.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedLink {
    #[serde(flatten)]
    pub link: Link,
    pub clicks: u64,
    pub last_click_ms: Option<i64>,
    pub daily: Vec<DayClicks>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DayClicks {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub clicks: u64,
}

/// Attempts at one store call before an export or import gives up on a store that is busy or
/// briefly away (it backs off between them, up to ~20 s in all).
const ATTEMPTS: u32 = 8;

/// `call`, again after a transient failure (the store shedding load, a timeout), with
/// growing pauses: an export or import is a long run of calls that should ride out a busy
/// store rather than stop half way.
async fn patiently<T, F, Fut>(mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "store busy; trying again");
                let pause = std::time::Duration::from_millis(100 << attempt.min(7));
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The links in `scopes`, newest first, as NDJSON, a page of lines at a time.
pub fn export_lines(
    store: Arc<dyn LinkStore>,
    scopes: Vec<ListScope>,
) -> impl Stream<Item = Result<String, StoreError>> + Send + 'static {
    let start: Option<Option<ListPosition>> = Some(None);
    futures_util::stream::unfold(start, move |state| {
        let (store, scopes) = (Arc::clone(&store), scopes.clone());
        async move {
            let from = state?;
            let read = patiently(|| read_scopes(&*store, &scopes, from.as_ref(), EXPORT_PAGE));
            let page = match read.await {
                Ok(page) => page,
                Err(e) => return Some((Err(e), None)),
            };
            let next = (page.len() == EXPORT_PAGE)
                .then(|| page.last().map(Link::position))
                .flatten();
            let lines = match export_page(Arc::clone(&store), page).await {
                Ok(lines) => lines,
                Err(e) => return Some((Err(e), None)),
            };
            Some((Ok(lines), next.map(Some)))
        }
    })
    .filter(|lines| std::future::ready(!matches!(lines, Ok(text) if text.is_empty())))
}

/// NDJSON lines of `links` with their statistics (a link deleted meanwhile is left out).
async fn export_page(store: Arc<dyn LinkStore>, links: Vec<Link>) -> Result<String, StoreError> {
    let codes: Vec<String> = links.iter().map(|link| link.code.clone()).collect();
    let stats: Vec<Result<Option<LinkStats>, StoreError>> =
        futures_util::stream::iter(codes.into_iter().map(|code| {
            let store = Arc::clone(&store);
            async move { patiently(|| store.stats(&code)).await }
        }))
        .buffered(EXPORT_CONCURRENCY)
        .collect()
        .await;
    let mut lines = String::new();
    for (link, stats) in links.into_iter().zip(stats) {
        let Some(stats) = stats? else {
            continue;
        };
        let record = ExportedLink {
            link,
            clicks: stats.total_clicks,
            last_click_ms: stats.last_click_ms,
            daily: stats
                .daily
                .iter()
                .map(|&(day, clicks)| DayClicks {
                    date: clock::format_day(day),
                    clicks,
                })
                .collect(),
        };
        // Serialising a struct of plain fields to JSON cannot fail.
        lines.push_str(&serde_json::to_string(&record).unwrap_or_default());
        lines.push('\n');
    }
    Ok(lines)
}

/// The first line of a whole-store export: its keys and its id counter.
pub async fn export_header(store: &dyn LinkStore) -> Result<String, StoreError> {
    let mut secrets = BTreeMap::new();
    for &name in CARRIED_SECRETS {
        let value = crate::secrets::stored(store, name).await?;
        secrets.insert(name.to_owned(), hex::encode(value));
    }
    let header = ExportHeader {
        kurz_export: EXPORT_FORMAT,
        next_id: store.lease_ids(0).await?.start,
        secrets,
        api_keys: store.keys().await?,
    };
    Ok(serde_json::to_string(&header).unwrap_or_default() + "\n")
}

impl LinkService {
    /// The links in `scopes` as NDJSON (see [`export_lines`]).
    pub fn export(
        &self,
        scopes: Vec<ListScope>,
    ) -> impl Stream<Item = Result<String, StoreError>> + Send + 'static {
        export_lines(Arc::clone(&self.store), scopes)
    }
}

/// What an import did, line by line and in total.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: u64,
    pub already_there: u64,
    pub skipped: u64,
}

/// A failure that stops an import (a line that cannot be imported only skips that line).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading the file: {0}")]
    Read(#[from] std::io::Error),
    #[error("the file is neither kurz's NDJSON export nor a CSV with a header row: {0}")]
    Format(String),
    #[error(
        "the target store has links and another {0} than the export's: import a whole-store \
         export into a new store (a new table or file)"
    )]
    OtherKeys(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Imports kurz's NDJSON export or a CSV file from `input` into `store`, one report line per
/// input line to `out`. `policy` checks each destination as a create would; `now_ms` is the
/// creation time of CSV rows.
pub async fn import(
    store: &dyn LinkStore,
    policy: &UrlPolicy,
    mut input: impl BufRead,
    out: &mut impl Write,
    now_ms: i64,
) -> Result<ImportReport, ImportError> {
    // What the file is, from its first byte that is not white space: JSON or a CSV header.
    // Nothing is read twice, and neither form is held whole in memory.
    let mut blank_lines = 0;
    let first = loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(ImportReport::default());
        }
        let newlines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count();
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(at) => {
                let first = buf[at];
                blank_lines += newlines(&buf[..at]);
                input.consume(at);
                break first;
            }
            None => {
                blank_lines += newlines(buf);
                let all = buf.len();
                input.consume(all);
            }
        }
    };
    let mut importer = Importer {
        store,
        policy,
        out,
        report: ImportReport::default(),
    };
    if first == b'{' {
        let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
        for (i, line) in input.lines().enumerate() {
            chunk.push((blank_lines + i + 1, line?));
            if chunk.len() == IMPORT_CHUNK {
                importer.ndjson_lines(std::mem::take(&mut chunk)).await?;
            }
        }
        importer.ndjson_lines(chunk).await?;
    } else {
        importer.csv(input, blank_lines, now_ms).await?;
    }
    Ok(importer.report)
}

struct Importer<'a, W: Write> {
    store: &'a dyn LinkStore,
    policy: &'a UrlPolicy,
    out: &'a mut W,
    report: ImportReport,
}

/// One CSV row's columns, by their names compared without case, spaces or underscores.
#[derive(Default)]
struct CsvColumns {
    url: Option<usize>,
    code: Option<usize>,
    title: Option<usize>,
    tags: Option<usize>,
    domain: Option<usize>,
}

impl<W: Write> Importer<'_, W> {
    fn say(&mut self, line: usize, what: std::fmt::Arguments) -> Result<(), ImportError> {
        writeln!(self.out, "line {line}: {what}")?;
        Ok(())
    }

    fn skip(&mut self, line: usize, why: &str) -> Result<(), ImportError> {
        self.report.skipped += 1;
        self.say(line, format_args!("skipped: {why}"))
    }

    /// Lines of kurz's export, written to the store [`IMPORT_CONCURRENCY`] at a time and
    /// reported in their order.
    async fn ndjson_lines(&mut self, lines: Vec<(usize, String)>) -> Result<(), ImportError> {
        let mut ready = Vec::with_capacity(lines.len());
        for (line, text) in lines {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if text.contains("\"kurz_export\"") {
                let header: ExportHeader = serde_json::from_str(text)
                    .map_err(|e| ImportError::Format(format!("line {line}: {e}")))?;
                self.header(line, header).await?;
                continue;
            }
            ready.push((line, self.parsed(text)));
        }
        let store = self.store;
        // A line that cannot be imported writes nothing: `None`, reported below.
        let outcomes: Vec<Option<Result<ImportOutcome, StoreError>>> =
            futures_util::stream::iter(ready.iter().map(|(_, parsed)| async move {
                let (link, stats) = parsed.as_ref().ok()?;
                Some(patiently(|| store.import(link, stats)).await)
            }))
            .buffered(IMPORT_CONCURRENCY)
            .collect()
            .await;
        for ((line, parsed), outcome) in ready.iter().zip(outcomes) {
            match (parsed, outcome) {
                (Ok((link, _)), Some(outcome)) => self.outcome(*line, &link.code, &outcome?)?,
                (Err(why), _) => self.skip(*line, why)?,
                (Ok(_), None) => {} // never: every line that parsed was written
            }
        }
        Ok(())
    }

    /// A line of the export as the link and statistics to store, or why it cannot be.
    fn parsed(&self, text: &str) -> Result<(Link, LinkStats), String> {
        let record: ExportedLink =
            serde_json::from_str(text).map_err(|e| format!("not a link of kurz's export: {e}"))?;
        let daily: Option<Vec<(u32, u64)>> = record
            .daily
            .iter()
            .map(|d| Some((clock::parse_day(&d.date)?, d.clicks)))
            .collect();
        let daily = daily.ok_or("a daily count's date is not YYYY-MM-DD")?;
        let link = self.checked(record.link)?;
        let stats = LinkStats {
            total_clicks: record.clicks,
            last_click_ms: record.last_click_ms,
            daily,
        };
        Ok((link, stats))
    }

    /// A whole-store export's keys and id counter, carried into the target.
    async fn header(&mut self, line: usize, header: ExportHeader) -> Result<(), ImportError> {
        if header.kurz_export != EXPORT_FORMAT {
            return Err(ImportError::Format(format!(
                "line {line}: export format {} (this kurz reads {EXPORT_FORMAT})",
                header.kurz_export
            )));
        }
        for (name, value) in &header.secrets {
            let value = hex::decode(value)
                .map_err(|e| ImportError::Format(format!("line {line}: key {name}: {e}")))?;
            let there = self.store.secret(name, &value).await?;
            if there != value {
                let empty = self.store.list(&ListScope::All, None, 1).await?.is_empty();
                if !empty {
                    return Err(ImportError::OtherKeys(name.clone()));
                }
                // Made by `kurz init` or a first start, and never used for a link.
                self.store.put_secret(name, &value).await?;
                self.say(
                    line,
                    format_args!("replaced the new store's unused {name} with the export's"),
                )?;
            }
        }
        let mut carried = 0;
        for key in &header.api_keys {
            if self.store.insert_key(key).await? {
                carried += 1;
            }
        }
        if !header.api_keys.is_empty() {
            self.say(
                line,
                format_args!(
                    "carried {carried} API keys ({} there already, kept as they are)",
                    header.api_keys.len() - carried
                ),
            )?;
        }
        let next = self.store.lease_ids(0).await?.start;
        if next < header.next_id {
            self.store.lease_ids(header.next_id - next).await?;
            self.say(
                line,
                format_args!("moved the id counter from {next} to {}", header.next_id),
            )?;
        }
        Ok(())
    }

    /// `link` held to the rules a create is held to (destination, status, labels).
    fn checked(&self, mut link: Link) -> Result<Link, String> {
        if !looks_like_code(&link.code) {
            return Err(format!(
                "'{}' is no code: 1-64 letters, digits, '-' or '_'",
                link.code.escape_default()
            ));
        }
        self.policy
            .check(&link.url)
            .map_err(|e| format!("{}: {e}", link.code))?;
        if ![301, 302, 307, 308].contains(&link.redirect_status) {
            return Err(format!(
                "redirect_status {} is not 301, 302, 307 or 308",
                link.redirect_status
            ));
        }
        link.tags = normalise_tags(&link.tags)?;
        link.title = match link.title.as_deref() {
            Some(title) => normalise_title(title)?,
            None => None,
        };
        Ok(link)
    }

    fn outcome(
        &mut self,
        line: usize,
        code: &str,
        outcome: &ImportOutcome,
    ) -> Result<(), ImportError> {
        match outcome {
            ImportOutcome::Imported => {
                self.report.imported += 1;
                self.say(line, format_args!("imported {code}"))
            }
            ImportOutcome::AlreadyThere => {
                self.report.already_there += 1;
                self.say(line, format_args!("already there: {code}"))
            }
            ImportOutcome::CodeTaken => {
                self.skip(line, &format!("another link has the code {code}"))
            }
        }
    }

    /// A CSV read row by row; `blank_lines` were before its header row.
    async fn csv(
        &mut self,
        input: impl std::io::Read,
        blank_lines: usize,
        now_ms: i64,
    ) -> Result<(), ImportError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| ImportError::Format(e.to_string()))?
            .clone();
        let mut columns = CsvColumns::default();
        for (i, name) in headers.iter().enumerate() {
            let name: String = name
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '_')
                .collect::<String>()
                .to_lowercase();
            match name.as_str() {
                "longurl" | "url" => columns.url = Some(i),
                "shortcode" | "code" => columns.code = Some(i),
                "title" => columns.title = Some(i),
                "tags" => columns.tags = Some(i),
                "domain" => columns.domain = Some(i),
                _ => {}
            }
        }
        let Some(url_column) = columns.url else {
            return Err(ImportError::Format(format!(
                "the header row has no 'Long URL' column: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            )));
        };
        for (i, row) in reader.records().enumerate() {
            // The header is line 1.
            let line = row
                .as_ref()
                .ok()
                .and_then(|r| r.position())
                .map_or(i + 2, |p| usize::try_from(p.line()).unwrap_or(i + 2))
                + blank_lines;
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    self.skip(line, &format!("not a CSV row: {e}"))?;
                    continue;
                }
            };
            let field = |column: Option<usize>| {
                column
                    .and_then(|c| row.get(c))
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
            };
            if let Some(domain) = field(columns.domain) {
                self.say(
                    line,
                    format_args!("warning: domain '{domain}' ignored (kurz serves one domain)"),
                )?;
            }
            let Some(raw_url) = field(Some(url_column)) else {
                self.skip(line, "no Long URL")?;
                continue;
            };
            let url = match self.policy.check(&raw_url) {
                Ok(checked) => checked.url,
                Err(e) => {
                    self.skip(line, &e.to_string())?;
                    continue;
                }
            };
            let tags: Vec<String> = field(columns.tags)
                .map(|t| {
                    t.split('|')
                        .map(|t| t.trim().to_owned())
                        .filter(|t| !t.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let tags = match normalise_tags(&tags) {
                Ok(tags) => tags,
                Err(why) => {
                    self.skip(line, &why)?;
                    continue;
                }
            };
            let title = match field(columns.title)
                .map(|t| normalise_title(&t))
                .transpose()
            {
                Ok(title) => title.flatten(),
                Err(why) => {
                    self.skip(line, &why)?;
                    continue;
                }
            };
            let link = Link {
                code: String::new(),
                url,
                created_at_ms: now_ms,
                title,
                tags,
                owner: Some("admin".into()),
                ..Link::default()
            };
            match field(columns.code) {
                Some(code) if !looks_like_code(&code) => {
                    self.skip(
                        line,
                        &format!("'{code}' is no code: 1-64 letters, digits, '-' or '_'"),
                    )?;
                }
                Some(code) => self.csv_link(line, Link { code, ..link }).await?,
                // The hash code: the same URL gets the same code when imported again.
                None => {
                    let code = hash_code(&link.url, &0u32.to_be_bytes(), 7);
                    self.csv_link(line, Link { code, ..link }).await?;
                }
            }
        }
        Ok(())
    }

    /// A CSV row's link, unless it is there already (same code and URL: imported before).
    async fn csv_link(&mut self, line: usize, link: Link) -> Result<(), ImportError> {
        let outcome = match patiently(|| self.store.get(&link.code)).await? {
            Some(there) if there.url == link.url => ImportOutcome::AlreadyThere,
            Some(_) => ImportOutcome::CodeTaken,
            None => {
                let none = LinkStats::default();
                patiently(|| self.store.import(&link, &none)).await?
            }
        };
        self.outcome(line, &link.code, &outcome)
    }
}
