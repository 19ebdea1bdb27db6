//! Replay: Kubernetes watch events from files, through the same engine. Accepts JSON Lines of WatchEvents
//! (what `record` writes, with `observedAt`) and the concatenated pretty-printed output of
//! `kubectl get <kind> --watch --output-watch-events -o json`.
//!
//! Files are read line by line and never whole. A bad line or object (not UTF-8, not JSON, a field of the
//! wrong type) is skipped with its `file:line`, the field and the type expected, and replay goes on; a value
//! from the file never appears in a message (it may be a secret). Several files are merged by a k-way merge
//! (see [`Merged`]): memory is bounded by a reorder window per file, not by the size of the capture.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    fs::File,
    io::{BufRead, BufReader},
    path::Path,
};

use serde_json::Value;

use crate::{
    engine::Ts,
    source::{Change, Observation},
    upstream::objects::{AgentRun, Job, Object, Pod},
};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A problem with one line or event, with where it is. A skipped event is not replayed; a warning's event is.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.reason)
    }
}

/// One decoded event, before merging.
#[derive(Clone, Debug)]
pub struct Event {
    pub observed_at: Option<Ts>,
    pub resource_version: Option<u64>,
    pub change: Change,
    pub file: usize,
    pub seq: usize,
    /// Where the event starts in its file.
    pub line: usize,
    /// The latest time the object carries that is not absurd (see [`ABSURD_AFTER_MS`]).
    pub latest: Option<Ts>,
}

/// What reading a file yields, in file order.
#[derive(Clone, Debug)]
pub enum Item {
    Event(Box<Event>),
    Skipped(Skipped),
    Warning(Skipped),
}

/// A line longer than this is skipped unread (bounds memory against a file without newlines).
pub const MAX_LINE_BYTES: usize = 16 << 20;
/// A pretty-printed value longer than this is skipped.
pub const MAX_VALUE_BYTES: usize = 64 << 20;
/// An object time later than its event's observation by more than this is absurd (clock skew between the
/// API server and the recorder is seconds): it is reported, and not used to time an event without
/// `observedAt`.
pub const ABSURD_AFTER_MS: i64 = 3_600_000;
/// An object time earlier than its event's observation by more than this (ten years) is reported too.
pub const ABSURD_BEFORE_MS: i64 = 10 * 366 * 86_400_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Form {
    JsonLines,
    /// Concatenated values, possibly pretty-printed; each starts on a line that opens an object.
    Concatenated,
}

/// Reads one file incrementally, event by event.
pub struct FileReader<R> {
    reader: R,
    name: String,
    index: usize,
    /// Lines read so far (the number of the current line).
    line: usize,
    form: Option<Form>,
    seq: usize,
    /// Observation time for events without `observedAt` (the wall clock at replay: nothing recorded can
    /// lie after it).
    now: Ts,
    buf: Vec<u8>,
    /// The value being accumulated (concatenated form), and the line it starts on.
    chunk: Vec<u8>,
    chunk_line: usize,
    /// After a syntax error: skip to the next line that opens an object.
    resyncing: bool,
    /// Lines of a failed value after its error, to look for the next value in (before reading on).
    requeued: VecDeque<(usize, Vec<u8>)>,
    /// Failed values since the last good one: re-reading their tails is bounded by this.
    failures: usize,
    out: VecDeque<Item>,
    done: bool,
}

impl FileReader<BufReader<File>> {
    pub fn open(path: &Path, index: usize, now: Ts) -> Result<Self, ReplayError> {
        let file = File::open(path)
            .map_err(|source| ReplayError::Read { path: path.display().to_string(), source })?;
        Ok(FileReader::new(BufReader::with_capacity(1 << 16, file), &path.display().to_string(), index, now))
    }
}

impl<R: BufRead> FileReader<R> {
    pub fn new(reader: R, name: &str, index: usize, now: Ts) -> Self {
        FileReader {
            reader,
            name: name.into(),
            index,
            line: 0,
            form: None,
            seq: 0,
            now,
            buf: Vec::new(),
            chunk: Vec::new(),
            chunk_line: 0,
            resyncing: false,
            requeued: VecDeque::new(),
            failures: 0,
            out: VecDeque::new(),
            done: false,
        }
    }

    fn skip(&mut self, line: usize, reason: impl Into<String>) {
        self.out.push_back(Item::Skipped(Skipped { file: self.name.clone(), line, reason: reason.into() }));
    }

    /// Reads the next line into `buf` (without its end of line); `None` at the end of the file. A line
    /// over [`MAX_LINE_BYTES`] is consumed and reported, and `buf` comes back empty with `Some(false)`.
    fn read_line(&mut self) -> Result<Option<bool>, std::io::Error> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let (take, ends) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            if !too_long {
                if self.buf.len() + take > MAX_LINE_BYTES + 1 {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&available[..take]);
                }
            }
            self.reader.consume(take);
            if ends {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.line += 1;
        if too_long {
            let line = self.line;
            self.skip(line, format!("line longer than {} MiB", MAX_LINE_BYTES >> 20));
            return Ok(Some(false));
        }
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        if self.line == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
            // A UTF-8 byte order mark (Windows editors write one): not part of the JSON.
            self.buf.drain(..3);
        }
        Ok(Some(true))
    }

    /// Reads until at least one item is ready or the file ends.
    fn fill(&mut self) -> Result<(), ReplayError> {
        while self.out.is_empty() && !self.done {
            if let Some((line, bytes)) = self.requeued.pop_front() {
                self.buf = bytes;
                let blank = self.buf.iter().all(u8::is_ascii_whitespace);
                self.on_concatenated_line(line, blank);
                continue;
            }
            let read =
                self.read_line().map_err(|source| ReplayError::Read { path: self.name.clone(), source })?;
            match read {
                None => {
                    self.done = true;
                    if !self.chunk.is_empty() {
                        let line = self.chunk_line;
                        self.chunk.clear();
                        self.skip(line, "not JSON: the file ends inside a value");
                    }
                }
                Some(false) => {
                    if self.form == Some(Form::Concatenated) {
                        self.chunk.clear();
                        self.resyncing = true;
                    }
                }
                Some(true) => self.on_line(),
            }
        }
        Ok(())
    }

    fn on_line(&mut self) {
        let line = self.line;
        let blank = self.buf.iter().all(u8::is_ascii_whitespace);
        if self.form.is_none() {
            if blank {
                return;
            }
            let whole = serde_json::from_slice::<Value>(&self.buf).map(|v| v.is_object()).unwrap_or(false);
            self.form = Some(if whole { Form::JsonLines } else { Form::Concatenated });
        }
        if self.form == Some(Form::JsonLines) {
            if blank {
                return;
            }
            if let Err(e) = std::str::from_utf8(&self.buf) {
                self.skip(line, format!("not UTF-8 (byte {} of the line)", e.valid_up_to() + 1));
                return;
            }
            match serde_json::from_slice::<Value>(&self.buf) {
                Ok(v) => self.decode_value(v, line),
                Err(e) => self.skip(line, format!("not JSON: {}", syntax(&e))),
            }
            return;
        }
        self.on_concatenated_line(line, blank);
    }

    fn on_concatenated_line(&mut self, line: usize, blank: bool) {
        if self.chunk.is_empty() {
            if blank {
                return;
            }
            let opens = self.buf.trim_ascii_start().starts_with(b"{");
            if !opens {
                if !self.resyncing {
                    self.resyncing = true;
                    self.skip(line, "not JSON: expected an object; skipping to the next line that opens one");
                }
                return;
            }
            self.resyncing = false;
            self.chunk_line = line;
        }
        if let Err(e) = std::str::from_utf8(&self.buf) {
            let reason = format!(
                "not UTF-8 (line {line}, byte {}); the value is skipped, up to the next line that opens an object",
                e.valid_up_to() + 1
            );
            let at = self.chunk_line;
            self.chunk.clear();
            self.resyncing = true;
            self.skip(at, reason);
            return;
        }
        self.chunk.extend_from_slice(&self.buf);
        self.chunk.push(b'\n');
        if self.chunk.len() > MAX_VALUE_BYTES {
            let at = self.chunk_line;
            self.chunk.clear();
            self.resyncing = true;
            self.skip(at, format!("a value longer than {} MiB", MAX_VALUE_BYTES >> 20));
            return;
        }
        // kubectl closes each event in column 0; a one-line value closes on its own line.
        let single = self.chunk_line == line;
        let closes = self.buf.starts_with(b"}") || (single && self.buf.trim_ascii_end().ends_with(b"}"));
        if closes {
            self.parse_chunk();
        }
    }

    /// Decodes every complete value in the chunk; keeps an incomplete tail for more lines.
    fn parse_chunk(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        let mut stream = serde_json::Deserializer::from_slice(&chunk).into_iter::<Value>();
        let mut consumed = 0;
        loop {
            let value_start = consumed + leading_whitespace(&chunk[consumed..]);
            let line = self.chunk_line + count_newlines(&chunk[..value_start]);
            match stream.next() {
                None => break,
                Some(Ok(v)) => {
                    consumed = stream.byte_offset();
                    self.failures = 0;
                    self.decode_value(v, line);
                }
                Some(Err(e)) if e.is_eof() => {
                    // Not complete yet: keep the rest for the lines that follow.
                    self.chunk = chunk[value_start..].to_vec();
                    self.chunk_line = line;
                    return;
                }
                Some(Err(e)) => {
                    self.skip(line, format!("not JSON: {}", syntax(&e)));
                    self.resyncing = true;
                    // The next value may start inside what was taken for this one (garbage that opened
                    // an object): look again from the line after the error. Each failure re-reads at most
                    // the rest of its value, and a run of failures stops re-reading, so hostile input
                    // costs a bounded multiple of its size.
                    self.failures += 1;
                    if self.failures <= 16 {
                        let error_line =
                            self.chunk_line + count_newlines(&chunk[..value_start]) + e.line().max(1) - 1;
                        let mut tail: Vec<(usize, Vec<u8>)> = (self.chunk_line..)
                            .zip(chunk.split(|b| *b == b'\n'))
                            .filter(|(n, _)| *n > error_line)
                            .map(|(n, l)| (n, l.to_vec()))
                            .collect();
                        // The split leaves an empty piece after the last newline.
                        tail.pop();
                        for item in tail.into_iter().rev() {
                            self.requeued.push_front(item);
                        }
                    }
                    return;
                }
            }
        }
    }

    fn decode_value(&mut self, value: Value, line: usize) {
        match decode(value, self.now) {
            Ok(None) => {}
            Ok(Some(d)) => {
                for w in d.warnings {
                    self.out.push_back(Item::Warning(Skipped { file: self.name.clone(), line, reason: w }));
                }
                let event = Event {
                    observed_at: d.observed_at,
                    resource_version: d.resource_version,
                    change: d.change,
                    file: self.index,
                    seq: self.seq,
                    line,
                    latest: d.latest,
                };
                self.seq += 1;
                self.out.push_back(Item::Event(Box::new(event)));
            }
            Err(reason) => self.skip(line, reason),
        }
    }

    /// The next item, reading as little as needed.
    pub fn next_item(&mut self) -> Result<Option<Item>, ReplayError> {
        self.fill()?;
        Ok(self.out.pop_front())
    }
}

fn leading_whitespace(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_whitespace()).count()
}

fn count_newlines(b: &[u8]) -> usize {
    b.iter().filter(|c| **c == b'\n').count()
}

/// serde_json's syntax error without the content: the message names a token class, the column where.
fn syntax(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.split(" at line ").next().unwrap_or("invalid JSON");
    format!("{what} (column {})", e.column())
}

/// Parses one file's text (either form); for tests and small inputs.
pub fn parse(text: &str, file: &str, file_index: usize) -> (Vec<Event>, Vec<Skipped>) {
    parse_bytes(text.as_bytes(), file, file_index, Ts::now())
}

/// Parses one file's bytes (either form), however malformed.
pub fn parse_bytes(bytes: &[u8], file: &str, file_index: usize, now: Ts) -> (Vec<Event>, Vec<Skipped>) {
    let mut reader = FileReader::new(bytes, file, file_index, now);
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    while let Ok(Some(item)) = reader.next_item() {
        match item {
            Item::Event(e) => events.push(*e),
            Item::Skipped(s) | Item::Warning(s) => skipped.push(s),
        }
    }
    (events, skipped)
}

struct Decoded {
    observed_at: Option<Ts>,
    resource_version: Option<u64>,
    change: Change,
    latest: Option<Ts>,
    warnings: Vec<String>,
}

/// What a JSON value holds, without the value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One JSON value → an event. `Ok(None)` for events that carry no object change (BOOKMARK). Errors name
/// the field and the type expected, never the value.
fn decode(value: Value, now: Ts) -> Result<Option<Decoded>, String> {
    let Value::Object(mut map) = value else {
        return Err(format!("expected a watch event (a JSON object), found {}", type_name(&value)));
    };
    let observed_at = match map.remove("observedAt") {
        Some(Value::String(s)) => Some(Ts::parse(&s).ok_or("field observedAt: expected an RFC 3339 time")?),
        Some(other) => {
            return Err(format!("field observedAt: expected an RFC 3339 time, found {}", type_name(&other)));
        }
        None => None,
    };
    let (kind, object) = match (map.remove("type"), map.remove("object")) {
        (Some(Value::String(t)), Some(obj)) => (t, obj),
        (Some(_), None) | (None, Some(_)) => {
            return Err("a watch event needs both fields type and object".into());
        }
        (Some(t), Some(_)) => return Err(format!("field type: expected a string, found {}", type_name(&t))),
        (None, None) => return Err("neither a watch event ({\"type\",\"object\"}) nor an object".into()),
    };
    let delete = match kind.as_str() {
        "ADDED" | "MODIFIED" => false,
        "DELETED" => true,
        "BOOKMARK" => return Ok(None),
        "ERROR" => {
            // A Status: its message can quote anything; the code is a number.
            let code = object.get("code").and_then(Value::as_i64);
            return Err(match code {
                Some(c) => format!("a watch ERROR event (code {c}; its message is not logged)"),
                None => "a watch ERROR event (its message is not logged)".into(),
            });
        }
        _ => return Err("field type: expected ADDED, MODIFIED, DELETED, BOOKMARK or ERROR".into()),
    };
    let reference = observed_at.unwrap_or(now);
    let mut warnings = Vec::new();
    check_times(&object, &mut String::from("object"), reference, &mut warnings);
    let object = object_of(&object)?;
    let resource_version =
        object.metadata().resource_version.as_deref().and_then(|rv| rv.parse::<u64>().ok());
    let change = if delete { Change::Delete(object) } else { Change::Upsert(object) };
    let latest = latest_time(&change, reference.add_millis(ABSURD_AFTER_MS));
    Ok(Some(Decoded { observed_at, resource_version, change, latest, warnings }))
}

/// Decodes the object by its kind with the path of a field that fails (what `Object::from_json` does, plus
/// the path).
fn object_of(value: &Value) -> Result<Object, String> {
    fn typed<'a, T: serde::Deserialize<'a>>(value: &'a Value) -> Result<T, String> {
        // Tracking the path costs on every field: decode plainly, and again with the path only on failure.
        if let Ok(v) = T::deserialize(value) {
            return Ok(v);
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "object".to_string() } else { format!("object.{path}") };
            format!("field {field}: {}", describe(&e.inner().to_string(), &path))
        })
    }
    let object = match value.get("kind") {
        Some(Value::String(k)) if k == "AgentRun" => Object::AgentRun(typed::<AgentRun>(value)?),
        Some(Value::String(k)) if k == "Job" => Object::Job(typed::<Job>(value)?),
        Some(Value::String(k)) if k == "Pod" => Object::Pod(typed::<Pod>(value)?),
        None => return Err("field object.kind: missing (expected AgentRun, Job or Pod)".into()),
        Some(_) => return Err("field object.kind: expected AgentRun, Job or Pod".into()),
    };
    Ok(object.slimmed())
}

/// serde's message for a field, reduced to what was expected and the kind of thing found. serde writes
/// `invalid type: <found>, expected <what>`; `<found>` quotes the value, so only its first word is kept.
/// Public for the watch source, whose malformed-object warning prints serde's message as it is.
pub fn describe(message: &str, path: &str) -> String {
    let expected = message.rsplit_once(", expected ").map(|(_, e)| e);
    let found = |rest: &str| {
        const KINDS: [(&str, &str); 10] = [
            ("string", "a string"),
            ("integer", "an integer"),
            ("floating point", "a number"),
            ("boolean", "a boolean"),
            ("map", "an object"),
            ("sequence", "an array"),
            ("null", "null"),
            ("unit", "null"),
            ("Option", "null"),
            ("character", "a string"),
        ];
        KINDS.iter().find(|(k, _)| rest.starts_with(k)).map(|(_, n)| *n).unwrap_or("another type")
    };
    if let (Some(rest), Some(exp)) = (message.strip_prefix("invalid type: "), expected) {
        return format!("expected {exp}, found {}", found(rest));
    }
    if let (Some(rest), Some(exp)) = (message.strip_prefix("invalid value: "), expected) {
        return format!("expected {exp}, found {} that is not one", found(rest));
    }
    if message.starts_with("missing field `") || message.starts_with("duplicate field `") {
        // Field names come from our types, not from the file.
        return message.split(" at line ").next().unwrap_or(message).to_string();
    }
    if let Some(exp) = expected {
        return format!("expected {exp}");
    }
    // A custom message may quote the value: say only what the field holds.
    let last = path.rsplit('.').next().unwrap_or(path);
    if last.ends_with("Timestamp") || last.ends_with("Time") || last.ends_with("At") {
        "expected an RFC 3339 time".into()
    } else {
        "not a valid value for this field".into()
    }
}

/// Reports object times absurdly far from the event's observation (`reference`). Only fields named like
/// times are looked at; managedFields are not ours to judge.
fn check_times(value: &Value, path: &mut String, reference: Ts, warnings: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "managedFields" {
                    continue;
                }
                let len = path.len();
                path.push('.');
                path.push_str(key);
                if let Value::String(s) = v
                    && (key.ends_with("Timestamp") || key.ends_with("Time") || key.ends_with("At"))
                    && let Some(t) = Ts::parse(s)
                {
                    if t.0 > reference.0.saturating_add(ABSURD_AFTER_MS) {
                        warnings.push(format!(
                            "field {path}: a time more than 1 h after the event was observed; replayed, not used to order it"
                        ));
                    } else if t.0 < reference.0.saturating_sub(ABSURD_BEFORE_MS) {
                        warnings.push(format!(
                            "field {path}: a time more than 10 years before the event was observed"
                        ));
                    }
                } else if v.is_object() || v.is_array() {
                    check_times(v, path, reference, warnings);
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_times(v, path, reference, warnings);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Events of one file may be out of order by up to this many (kubectl's initial list is in name order, not
/// resourceVersion order); the reorder window costs this many decoded events of memory per file.
pub const REORDER_WINDOW: usize = 16_384;

/// Merge key: `observedAt` when every file's first event has one, else the numeric resourceVersion (an event
/// without one goes last, as before).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key(i64, u64);

struct Pending {
    key: Key,
    file: usize,
    seq: usize,
    event: Box<Event>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.file, self.seq) == (other.key, other.file, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.file, self.seq).cmp(&(other.key, other.file, other.seq))
    }
}

struct Source<R> {
    reader: FileReader<R>,
    window: BinaryHeap<Reverse<Pending>>,
    /// Items read but not yet handed out (skips and warnings go out as soon as they are read).
    notes: VecDeque<Item>,
    /// Events read but not keyed yet (before the merge mode is known).
    first: Option<Box<Event>>,
    last_key: Option<Key>,
    last_observed: Option<Ts>,
    late: usize,
    exhausted: bool,
}

/// The events of several files in replay order, read incrementally: each file through a reorder window of
/// [`REORDER_WINDOW`] events, the files by a k-way merge. An event further out of order than the window is
/// replayed where it is, with one warning per file. Memory: the windows, not the capture.
pub struct Merged<R> {
    sources: Vec<Source<R>>,
    by_observed: Option<bool>,
    last_at: Ts,
    error: Option<ReplayError>,
    /// An event replayed late, handed out right after its warning.
    parked: Option<Observation>,
}

impl Merged<BufReader<File>> {
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self, ReplayError> {
        let now = Ts::now();
        let readers = paths
            .iter()
            .enumerate()
            .map(|(i, p)| FileReader::open(p.as_ref(), i, now))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Merged::new(readers))
    }
}

/// An observation, or a note about a line of a file. Transient (one at a time), so not boxed, like
/// [`Object`].
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Replayed {
    Observation(Observation),
    Skipped(Skipped),
    Warning(Skipped),
}

impl<R: BufRead> Merged<R> {
    pub fn new(readers: Vec<FileReader<R>>) -> Self {
        let sources = readers
            .into_iter()
            .map(|reader| Source {
                reader,
                window: BinaryHeap::new(),
                notes: VecDeque::new(),
                first: None,
                last_key: None,
                last_observed: None,
                late: 0,
                exhausted: false,
            })
            .collect();
        Merged { sources, by_observed: None, last_at: Ts(i64::MIN), error: None, parked: None }
    }

    /// A read error of a file, which ends its events (the others go on).
    pub fn take_error(&mut self) -> Option<ReplayError> {
        self.error.take()
    }

    /// Reads one item of a file into its notes or its first event; false at its end.
    fn read_one(&mut self, i: usize) -> bool {
        let source = &mut self.sources[i];
        if source.exhausted {
            return false;
        }
        match source.reader.next_item() {
            Ok(Some(Item::Event(e))) => {
                if self.by_observed.is_none() {
                    source.first = Some(e);
                } else {
                    let by_observed = self.by_observed == Some(true);
                    source.push(e, by_observed);
                }
                true
            }
            Ok(Some(other)) => {
                source.notes.push_back(other);
                true
            }
            Ok(None) => {
                source.exhausted = true;
                false
            }
            Err(e) => {
                source.exhausted = true;
                self.error.get_or_insert(e);
                false
            }
        }
    }

    /// The merge mode needs every file's first event.
    fn start(&mut self) {
        for i in 0..self.sources.len() {
            while self.sources[i].first.is_none() && self.read_one(i) {}
        }
        let by_observed =
            self.sources.iter().filter_map(|s| s.first.as_ref()).all(|e| e.observed_at.is_some());
        self.by_observed = Some(by_observed);
        for s in &mut self.sources {
            if let Some(e) = s.first.take() {
                s.push(e, by_observed);
            }
        }
    }

    fn next_replayed(&mut self) -> Option<Replayed> {
        if self.by_observed.is_none() {
            self.start();
        }
        for i in 0..self.sources.len() {
            while self.sources[i].window.len() < REORDER_WINDOW && self.read_one(i) {}
            if let Some(note) = self.sources[i].notes.pop_front() {
                match note {
                    Item::Skipped(s) => return Some(Replayed::Skipped(s)),
                    Item::Warning(s) => return Some(Replayed::Warning(s)),
                    // Events never go to the notes.
                    Item::Event(_) => {}
                }
            }
        }
        let (i, _) = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.window.peek().map(|Reverse(p)| (i, (p.key, p.file, p.seq))))
            .min_by_key(|(_, k)| *k)?;
        let source = &mut self.sources[i];
        let Reverse(p) = source.window.pop()?;
        if source.last_key.is_some_and(|k| p.key < k) {
            source.late += 1;
            if source.late == 1 {
                return Some(self.late_warning(i, p));
            }
        } else {
            source.last_key = Some(p.key);
        }
        Some(self.observation(p))
    }

    /// Warns about the first event of a file out of order beyond the window, then replays it.
    fn late_warning(&mut self, i: usize, p: Pending) -> Replayed {
        let warning = Skipped {
            file: self.sources[i].reader.name.clone(),
            line: p.event.line,
            reason: format!(
                "out of order by more than {REORDER_WINDOW} events; replayed late (later ones are not reported)"
            ),
        };
        if let Replayed::Observation(o) = self.observation(p) {
            self.parked = Some(o);
        }
        Replayed::Warning(warning)
    }

    /// The observation time of an event without `observedAt` is the latest (sane) time its object carries,
    /// never earlier than the event before it.
    fn observation(&mut self, p: Pending) -> Replayed {
        let e = p.event;
        let at = e.observed_at.or(e.latest).unwrap_or(self.last_at).max(self.last_at);
        self.last_at = at;
        Replayed::Observation(Observation { at, change: e.change })
    }
}

impl<R> Source<R> {
    fn push(&mut self, e: Box<Event>, by_observed: bool) {
        let key = if by_observed {
            // An event without observedAt in such a file goes with the one before it.
            let at = e.observed_at.or(self.last_observed).unwrap_or(Ts(i64::MIN));
            self.last_observed = Some(at);
            Key(at.0, e.resource_version.unwrap_or(u64::MAX))
        } else {
            Key(0, e.resource_version.unwrap_or(u64::MAX))
        };
        self.window.push(Reverse(Pending { key, file: e.file, seq: e.seq, event: e }));
    }
}

impl<R: BufRead> Iterator for Merged<R> {
    type Item = Replayed;

    fn next(&mut self) -> Option<Replayed> {
        if let Some(o) = self.parked.take() {
            return Some(Replayed::Observation(o));
        }
        self.next_replayed()
    }
}

/// Everything read from the files, in replay order (small inputs and tests; `replay` streams [`Merged`]).
#[derive(Debug, Default)]
pub struct Capture {
    pub observations: Vec<Observation>,
    pub skipped: Vec<Skipped>,
}

pub fn read_files<P: AsRef<Path>>(paths: &[P]) -> Result<Capture, ReplayError> {
    let mut merged = Merged::open(paths)?;
    let mut capture = Capture::default();
    for r in merged.by_ref() {
        match r {
            Replayed::Observation(o) => capture.observations.push(o),
            Replayed::Skipped(s) | Replayed::Warning(s) => capture.skipped.push(s),
        }
    }
    match merged.take_error() {
        Some(e) => Err(e),
        None => Ok(capture),
    }
}

/// Merges decoded events in memory, by the same rules as [`Merged`].
pub fn merge(events: Vec<Event>) -> Vec<Observation> {
    let files = events.iter().map(|e| e.file).max().map_or(0, |m| m + 1);
    let mut per_file: Vec<Vec<Event>> = (0..files).map(|_| Vec::new()).collect();
    for e in events {
        per_file[e.file].push(e);
    }
    let readers: Vec<FileReader<&[u8]>> =
        (0..files).map(|i| FileReader::new(&b""[..], &format!("#{i}"), i, Ts::now())).collect();
    let mut merged = Merged::new(readers);
    for (source, events) in merged.sources.iter_mut().zip(per_file) {
        source.reader.out.extend(events.into_iter().map(|e| Item::Event(Box::new(e))));
    }
    merged
        .filter_map(|r| match r {
            Replayed::Observation(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// The latest time the object carries, ignoring times after `limit` (absurd ones).
fn latest_time(change: &Change, limit: Ts) -> Option<Ts> {
    let object = match change {
        Change::Upsert(o) | Change::Delete(o) => o,
        _ => return None,
    };
    let mut times: Vec<Ts> = Vec::new();
    let meta = object.metadata();
    times.extend(meta.creation_timestamp.iter().map(crate::upstream::ts));
    times.extend(meta.deletion_timestamp.iter().map(crate::upstream::ts));
    match object {
        Object::AgentRun(r) => {
            if let Some(s) = &r.status {
                times.extend(s.updated_at.iter().copied());
                times.extend(s.conditions.iter().filter_map(|c| c.last_transition_time));
            }
        }
        Object::Job(j) => {
            times.extend(j.status.start_time.iter().copied());
            times.extend(j.status.conditions.iter().filter_map(|c| c.last_transition_time));
        }
        Object::Pod(p) => {
            for c in &p.status.container_statuses {
                if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    times.extend(t.finished_at.iter().copied());
                }
            }
        }
    }
    times.into_iter().filter(|t| *t <= limit).max()
}

/// One event in the JSON Lines form `record` writes and `replay` reads.
pub fn to_json_line(obs: &Observation) -> Option<String> {
    let (kind, object) = match &obs.change {
        Change::Upsert(o) => ("MODIFIED", o),
        Change::Delete(o) => ("DELETED", o),
        _ => return None,
    };
    let line =
        serde_json::json!({ "type": kind, "object": object.to_json(), "observedAt": obs.at.to_string() });
    Some(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"r-job","namespace":"agents","uid":"j1","resourceVersion":"12","creationTimestamp":"2026-08-20T12:00:01Z","labels":{"agents.proompteng.ai/agent-run":"r"}}}"#;

    #[test]
    fn reads_json_lines_and_reports_bad_lines() {
        let text = format!(
            "{{\"type\":\"ADDED\",\"object\":{JOB},\"observedAt\":\"2026-08-20T12:00:02Z\"}}\n\
             this is not json\n\
             {{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Job\",\"status\":{{\"startTime\":\"never\"}}}}}}\n\
             {{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":\"Job\",\"metadata\":{{\"resourceVersion\":\"20\"}}}}}}\n\
             {{\"type\":\"DELETED\",\"object\":{JOB},\"observedAt\":\"2026-08-20T12:00:09Z\"}}\n"
        );
        let (events, skipped) = parse(&text, "cap.jsonl", 0);
        assert_eq!(events.len(), 2);
        assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), vec![2, 3]);
        assert!(skipped[0].to_string().starts_with("cap.jsonl:2: not JSON"), "{}", skipped[0]);
        assert_eq!(
            skipped[1].reason,
            "field object.status.startTime: expected an RFC 3339 time, found a string that is not one"
        );
        let obs = merge(events);
        assert_eq!(obs[0].at, Ts::parse("2026-08-20T12:00:02Z").unwrap());
        assert!(matches!(obs[1].change, Change::Delete(_)));
    }

    #[test]
    fn reads_kubectl_pretty_output_and_resyncs_after_garbage() {
        let pretty = serde_json::to_string_pretty(&serde_json::json!({
            "type": "ADDED", "object": serde_json::from_str::<Value>(JOB).unwrap()
        }))
        .unwrap();
        let text = format!("{pretty}\n{{\n  \"type\": \"ADDED\",\n  oops\n}}\n{pretty}\n");
        let (events, skipped) = parse(&text, "jobs.json", 0);
        assert_eq!(events.len(), 2);
        assert_eq!(skipped.len(), 1);
        let first_event_lines = pretty.lines().count();
        assert_eq!(skipped[0].line, first_event_lines + 1);
        // No observedAt: time comes from the object itself.
        let obs = merge(events);
        assert_eq!(obs[0].at, Ts::parse("2026-08-20T12:00:01Z").unwrap());
    }

    #[test]
    fn merges_files_by_resource_version_without_observed_times() {
        let a = r#"{"type":"ADDED","object":{"kind":"Job","metadata":{"uid":"a","resourceVersion":"30"}}}"#;
        let b = r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"uid":"b","resourceVersion":"7"}}}"#;
        let (mut ea, _) = parse(a, "jobs", 0);
        let (eb, _) = parse(b, "pods", 1);
        ea.extend(eb);
        let obs = merge(ea);
        let uids: Vec<_> = obs
            .iter()
            .map(|o| match &o.change {
                Change::Upsert(o) => o.metadata().uid.clone().unwrap(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(uids, vec!["b", "a"]);
    }

    #[test]
    fn serde_messages_lose_their_values() {
        assert_eq!(
            describe("invalid type: string \"s3cret\", expected i64", "a.b"),
            "expected i64, found a string"
        );
        assert_eq!(
            describe("invalid value: string \"s3cret, expected x\", expected an RFC 3339 time", "t"),
            "expected an RFC 3339 time, found a string that is not one"
        );
        assert_eq!(describe("missing field `uid`", "metadata"), "missing field `uid`");
        assert_eq!(describe("s3cret is wrong", "status.updatedAt"), "expected an RFC 3339 time");
        assert_eq!(describe("s3cret is wrong", "spec.x"), "not a valid value for this field");
    }

    /// Events further out of order than the window are replayed late with one warning; within it, sorted.
    #[test]
    fn reorder_window_sorts_what_it_can_and_reports_the_rest() {
        let line = |rv: usize| {
            format!(
                "{{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Job\",\"metadata\":{{\"uid\":\"u{rv}\",\"resourceVersion\":\"{rv}\"}}}}}}\n"
            )
        };
        // 3, 1, 2, then the window's worth of later events, then 0 (beyond the window).
        let mut text = line(3) + &line(1) + &line(2);
        for rv in 10..10 + REORDER_WINDOW + 5 {
            text.push_str(&line(rv));
        }
        text.push_str(&line(0));
        let reader = FileReader::new(text.as_bytes(), "f", 0, Ts(0));
        let out: Vec<Replayed> = Merged::new(vec![reader]).collect();
        let rvs: Vec<u64> = out
            .iter()
            .filter_map(|r| match r {
                Replayed::Observation(o) => match &o.change {
                    Change::Upsert(o) => o.metadata().resource_version.as_ref().and_then(|v| v.parse().ok()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(&rvs[..3], &[1, 2, 3]);
        assert_eq!(rvs.len(), REORDER_WINDOW + 5 + 4);
        let warnings: Vec<&Skipped> =
            out.iter().filter_map(|r| if let Replayed::Warning(w) = r { Some(w) } else { None }).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].line, REORDER_WINDOW + 5 + 4);
    }

    #[test]
    fn a_line_without_end_is_skipped_unread_and_reading_goes_on() {
        let mut text = vec![b'{'; MAX_LINE_BYTES + 10];
        text.push(b'\n');
        text.extend(format!("{{\"type\":\"ADDED\",\"object\":{JOB}}}\n").as_bytes());
        let (events, skipped) = parse_bytes(&text, "big", 0, Ts::now());
        assert_eq!(events.len(), 1);
        assert_eq!(skipped.len(), 1);
        assert_eq!((skipped[0].line, skipped[0].reason.as_str()), (1, "line longer than 16 MiB"));
    }

    #[test]
    fn what_record_writes_replay_reads() {
        let (events, _) = parse(&format!("{{\"type\":\"ADDED\",\"object\":{JOB}}}"), "x", 0);
        let obs = Observation { at: Ts(1_787_227_205_000), change: events[0].change.clone() };
        let line = to_json_line(&obs).unwrap();
        let (again, skipped) = parse(&line, "y", 0);
        assert!(skipped.is_empty());
        assert_eq!(merge(again), vec![obs]);
    }
}
