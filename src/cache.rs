//! A content-addressed cache on disk of pass outputs and evaluations, so that a second run of
//! a recipe (or a run resumed after Ctrl-C) rebuilds nothing it already built.
//!
//! An entry is found by a [`Key`]: a blake3 hash of everything its content depends on (the
//! input model's bytes, the pass, its configuration, the data files, the runtime ...). Each
//! entry is one file `<key>.entry` in the cache folder, written to a temporary file first and
//! renamed into place, so that a run killed while writing leaves at worst a `.tmp-*` file,
//! which lookups ignore and [`Cache::clear`] removes. An entry that fails to decode (its
//! checksum, its framing) is a miss with a warning; the next store replaces it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use pipeline_passes::ir::proto::ModelProto;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// The first bytes of every entry file; the number is the file format's version.
const MAGIC: &[u8; 16] = b"pipeline-cache1\n";
/// The suffix of entry files; nothing else in the folder is ever read or removed but these
/// and temporary files.
const ENTRY_SUFFIX: &str = ".entry";
/// The prefix of files being written.
const TEMP_PREFIX: &str = ".tmp-";
/// A header longer than this is corrupt (headers hold a few names and numbers).
const MAX_HEADER: u64 = 1 << 20;

/// Why the cache could not be opened, written or listed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error(
        "cache folder {path}: {source}\n  hint: set another folder with --cache-dir or \
             PIPELINE_CACHE_DIR, or run with --no-cache"
    )]
    Folder { path: PathBuf, source: std::io::Error },

    /// The folder exists (or was made) but a file cannot be written in it.
    #[error(
        "cache folder {path} cannot be written: {source}\n  hint: set another folder with \
         --cache-dir or PIPELINE_CACHE_DIR, or run with --no-cache"
    )]
    Unwritable { path: PathBuf, source: std::io::Error },

    /// `pipeline cache ls` or `clear` on a folder that cannot be read (a file, say).
    #[error(
        "cache folder {path} cannot be read: {source}\n  hint: name the cache folder with \
         --cache-dir DIR or PIPELINE_CACHE_DIR"
    )]
    Unreadable { path: PathBuf, source: std::io::Error },

    #[error("cache entry {path}: {source}")]
    Entry { path: PathBuf, source: std::io::Error },
}

impl CacheError {
    /// 2 when the folder the user chose is wrong, 1 when an entry could not be read or
    /// written, as the command line reports them.
    pub fn exit_code(&self) -> u8 {
        match self {
            CacheError::Entry { .. } => 1,
            _ => 2,
        }
    }
}

/// The folder the cache lives in when no flag says otherwise: `PIPELINE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/pipeline`, else `~/.cache/pipeline`; `None` when none of these is set.
pub fn default_dir() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = set("PIPELINE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = set("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("pipeline"));
    }
    set("HOME").map(|home| PathBuf::from(home).join(".cache").join("pipeline"))
}

/// The address of an entry: a blake3 hash of named fields, each framed by its length so that
/// no two different lists of fields hash alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(blake3::Hash);

impl Key {
    /// The key in hexadecimal, as entry files are named.
    pub fn hex(&self) -> String {
        self.0.to_hex().to_string()
    }
}

/// Builds a [`Key`] from named fields.
#[derive(Debug, Clone)]
pub struct KeyBuilder(blake3::Hasher);

impl KeyBuilder {
    /// A key for entries of `kind` (`step`, `accuracy`), which no other kind shares.
    pub fn new(kind: &str) -> Self {
        let mut builder = KeyBuilder(blake3::Hasher::new());
        builder.field("kind", kind.as_bytes());
        builder
    }

    /// Adds the field `name` with the value `bytes`.
    pub fn field(&mut self, name: &str, bytes: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), bytes] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn finish(&self) -> Key {
        Key(self.0.finalize())
    }
}

/// The blake3 hash of a file's content, read as a stream.
pub fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize())
}

/// The blake3 hash of a model's protobuf encoding, computed as the encoding is produced: the
/// same hash as of `encode_to_vec()`'s bytes, without holding them (a model over 2 GiB has no
/// protobuf of its own, and its weights need not be copied to be hashed).
pub fn hash_model(model: &ModelProto) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new();
    // Writing to a hasher does not fail.
    if let Err(error) = pipeline_passes::ir::encode_to(model, &mut hasher) {
        warn!("hashing a model failed: {error}");
    }
    hasher.finalize()
}

/// What an entry holds: a label for `pipeline cache ls` (the pass name), a small JSON value,
/// and byte blobs (a model, the files a pass made).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub label: String,
    pub meta: serde_json::Value,
    pub blobs: Vec<Vec<u8>>,
}

/// The JSON header that follows [`MAGIC`] in an entry file.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    label: String,
    /// Seconds since the Unix epoch when the entry was written.
    created: u64,
    meta: serde_json::Value,
    /// The length of each blob, in the order they follow the header.
    blobs: Vec<u64>,
    /// The blake3 hash of the blobs, one after the other, in hexadecimal.
    checksum: String,
}

/// One entry as `pipeline cache ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryInfo {
    pub key: String,
    pub label: String,
    /// Bytes on disk.
    pub size: u64,
    /// Seconds since the entry was written.
    pub age_s: u64,
}

/// What [`Cache::clear`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleared {
    pub entries: usize,
    pub temporary: usize,
    pub bytes: u64,
}

/// The cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens the cache in `dir`, creating the folder if needed, and checks once that a file
    /// can be written in it: a run with a cache it cannot fill stops here, before anything
    /// runs, rather than warning at every entry.
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        if dir.exists() && !dir.is_dir() {
            let source = std::io::Error::other("it is a file, not a folder");
            return Err(CacheError::Folder { path: dir.to_path_buf(), source });
        }
        std::fs::create_dir_all(dir)
            .map_err(|source| CacheError::Folder { path: dir.to_path_buf(), source })?;
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(|source| CacheError::Unwritable { path: dir.to_path_buf(), source })?;
        Ok(Cache { dir: dir.to_path_buf() })
    }

    /// The cache in `dir` for reading and clearing, without creating the folder.
    pub fn at(dir: &Path) -> Cache {
        Cache { dir: dir.to_path_buf() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}{ENTRY_SUFFIX}", key.hex()))
    }

    /// The entry stored under `key`, or `None` when there is none or it is corrupt (with a
    /// warning: the caller computes the content again and [`Cache::put`] replaces it).
    pub fn get(&self, key: &Key) -> Option<Entry> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                warn!(
                    "cannot read the cache entry {}: {error}; computing it again",
                    path.display()
                );
                return None;
            }
        };
        match decode(&bytes) {
            Ok((_, entry)) => Some(entry),
            Err(reason) => {
                warn!(
                    "the cache entry {} is corrupt ({reason}); computing it again and replacing it",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores `entry` under `key`, replacing any entry there, through a temporary file renamed
    /// into place.
    pub fn put(&self, key: &Key, entry: &Entry) -> Result<(), CacheError> {
        let path = self.path(key);
        let fail = |source| CacheError::Entry { path: path.clone(), source };
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut checksum = blake3::Hasher::new();
        for blob in &entry.blobs {
            checksum.update(blob);
        }
        let header = Header {
            label: entry.label.clone(),
            created,
            meta: entry.meta.clone(),
            blobs: entry.blobs.iter().map(|b| b.len() as u64).collect(),
            checksum: checksum.finalize().to_hex().to_string(),
        };
        let header = serde_json::to_vec(&header).map_err(|e| fail(e.into()))?;

        let mut file =
            tempfile::Builder::new().prefix(TEMP_PREFIX).tempfile_in(&self.dir).map_err(fail)?;
        let mut writer = std::io::BufWriter::new(file.as_file_mut());
        writer.write_all(MAGIC).map_err(fail)?;
        writer.write_all(&(header.len() as u64).to_le_bytes()).map_err(fail)?;
        writer.write_all(&header).map_err(fail)?;
        for blob in &entry.blobs {
            writer.write_all(blob).map_err(fail)?;
        }
        writer.flush().map_err(fail)?;
        drop(writer);
        file.as_file().sync_all().map_err(fail)?;
        file.persist(&path).map_err(|e| fail(e.error))?;
        debug!("cached {} as {}", entry.label, path.display());
        Ok(())
    }

    /// Every entry, oldest first; files that are not entries are left out, corrupt entries are
    /// listed with the label `(corrupt)`.
    pub fn list(&self) -> Result<Vec<EntryInfo>, CacheError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut entries = Vec::new();
        for (path, name) in self.files()? {
            let Some(key) = name.strip_suffix(ENTRY_SUFFIX) else { continue };
            let fail = |source| CacheError::Entry { path: path.clone(), source };
            let size = std::fs::metadata(&path).map_err(fail)?.len();
            let (label, created) = match read_header(&path) {
                Ok(header) => (header.label, header.created),
                Err(_) => ("(corrupt)".to_string(), now),
            };
            entries.push(EntryInfo {
                key: key.to_string(),
                label,
                size,
                age_s: now.saturating_sub(created),
            });
        }
        entries.sort_by(|a, b| b.age_s.cmp(&a.age_s).then_with(|| a.key.cmp(&b.key)));
        Ok(entries)
    }

    /// Removes every entry and every temporary file a stopped run left; other files in the
    /// folder are not the cache's and stay.
    pub fn clear(&self) -> Result<Cleared, CacheError> {
        let mut cleared = Cleared::default();
        for (path, name) in self.files()? {
            let entry = name.ends_with(ENTRY_SUFFIX);
            if !entry && !name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let fail = |source| CacheError::Entry { path: path.clone(), source };
            cleared.bytes += std::fs::metadata(&path).map_err(fail)?.len();
            std::fs::remove_file(&path).map_err(fail)?;
            if entry {
                cleared.entries += 1;
            } else {
                cleared.temporary += 1;
            }
        }
        Ok(cleared)
    }

    /// The plain files in the folder with their names; none when the folder does not exist.
    fn files(&self) -> Result<Vec<(PathBuf, String)>, CacheError> {
        let fail = |source| CacheError::Unreadable { path: self.dir.clone(), source };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(fail(error)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(fail)?;
            if !entry.file_type().map_err(fail)?.is_file() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                files.push((entry.path(), name.to_string()));
            }
        }
        Ok(files)
    }
}

/// Cached accuracies of models, so that a model measured before (the same bytes, on the same
/// data, by the same metric and runtime) is not evaluated again. Latency is never cached: it
/// is noisy, and candidates are compared by latencies measured in the same run.
#[derive(Debug, Clone)]
pub struct AccuracyCache {
    cache: Cache,
    /// The key's fields besides the model.
    base: KeyBuilder,
}

/// An accuracy the cache holds, with the fidelity figures it was taken from when the metric
/// is `kind: fidelity`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownAccuracy {
    pub accuracy: f64,
    pub fidelity: Option<crate::evaluate::Fidelity>,
}

impl AccuracyCache {
    /// Accuracies of `recipe`'s metric on its evaluation data, measured by ONNX Runtime
    /// `ort_version` with `threads` on the recipe's target; `None` when the recipe measures
    /// no accuracy. The data file is read to hash its content. With `kind: fidelity`, the
    /// figures compare a model with the source's output, so the key holds `source`, the hash
    /// of the source model's bytes; without it nothing is cached.
    pub fn for_recipe(
        cache: Cache,
        recipe: &crate::recipe::Recipe,
        output: &str,
        ort_version: &str,
        threads: crate::runtime::Threads,
        source: Option<blake3::Hash>,
    ) -> Result<Option<AccuracyCache>, CacheError> {
        let (Some(metric), Some(data)) = (&recipe.metrics.accuracy, &recipe.data.evaluation) else {
            return Ok(None);
        };
        let fidelity = metric.kind == crate::recipe::AccuracyKind::Fidelity;
        if fidelity && source.is_none() {
            return Ok(None);
        }
        let path = recipe.resolve(&data.path);
        let content =
            hash_file(&path).map_err(|source| CacheError::Entry { path: path.clone(), source })?;
        let mut base = KeyBuilder::new("accuracy");
        base.field("crate", env!("CARGO_PKG_VERSION").as_bytes())
            .field("data", content.as_bytes())
            .field("samples", format!("{:?}", data.samples).as_bytes())
            .field("labels", format!("{:?}", data.labels).as_bytes())
            .field("metric", format!("{:?}", metric.kind).as_bytes())
            .field("output", output.as_bytes())
            .field("ort", ort_version.as_bytes())
            .field("target", recipe.target.to_string().as_bytes())
            .field("threads", format!("{threads:?}").as_bytes());
        if let (true, Some(source)) = (fidelity, source) {
            base.field("score", format!("{:?}", metric.score).as_bytes())
                .field("source", source.as_bytes());
        }
        Ok(Some(AccuracyCache { cache, base }))
    }

    fn key(&self, model: &blake3::Hash) -> Key {
        self.base.clone().field("model", model.as_bytes()).finish()
    }

    /// The accuracy (and fidelity figures) measured before on the model whose bytes hash to
    /// `model`.
    pub fn get(&self, model: &blake3::Hash) -> Option<KnownAccuracy> {
        let entry = self.cache.get(&self.key(model))?;
        let accuracy = entry.meta.get("accuracy").and_then(|a| a.as_f64());
        let Some(accuracy) = accuracy else {
            warn!("the cached accuracy {} holds no number; measuring again", self.key(model).hex());
            return None;
        };
        let fidelity = match entry.meta.get("fidelity") {
            None | Some(serde_json::Value::Null) => None,
            Some(figures) => match serde_json::from_value(figures.clone()) {
                Ok(figures) => Some(figures),
                Err(error) => {
                    warn!("the cached fidelity figures do not read ({error}); measuring again");
                    return None;
                }
            },
        };
        Some(KnownAccuracy { accuracy, fidelity })
    }

    /// Remembers `known` for the model whose bytes hash to `model`; a failure to write is a
    /// warning, the run goes on.
    pub fn put(&self, model: &blake3::Hash, known: &KnownAccuracy) {
        // JSON has no NaN or infinity: figures holding one are measured again next time.
        if let Some(f) = &known.fidelity {
            let figures = [f.cosine_mean, f.cosine_min, f.max_abs_error, f.max_rel_error];
            if !figures.iter().chain(&f.top1_agreement).all(|v| v.is_finite()) {
                tracing::debug!("fidelity figures that are not all finite are not cached");
                return;
            }
        }
        let entry = Entry {
            label: "accuracy".into(),
            meta: serde_json::json!({"accuracy": known.accuracy, "fidelity": known.fidelity}),
            blobs: Vec::new(),
        };
        if let Err(error) = self.cache.put(&self.key(model), &entry) {
            warn!("the accuracy was not cached: {error}");
        }
    }
}

/// Reads only the header of the entry file at `path`.
fn read_header(path: &Path) -> Result<Header, String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut start = [0u8; MAGIC.len() + 8];
    file.read_exact(&mut start).map_err(|e| e.to_string())?;
    let length = header_length(&start)?;
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    serde_json::from_slice(&header).map_err(|e| format!("header: {e}"))
}

/// The header length that follows the magic bytes at the start of `bytes`.
fn header_length(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() < MAGIC.len() + 8 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an entry of this version".into());
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes[MAGIC.len()..MAGIC.len() + 8]);
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER {
        return Err(format!("header of {length} bytes"));
    }
    Ok(length)
}

/// Decodes a whole entry file, checking its framing and checksum.
fn decode(bytes: &[u8]) -> Result<(Header, Entry), String> {
    let length = header_length(bytes)? as usize;
    let start = MAGIC.len() + 8;
    let header_bytes = bytes.get(start..start + length).ok_or("truncated header")?;
    let header: Header =
        serde_json::from_slice(header_bytes).map_err(|e| format!("header: {e}"))?;

    let mut offset = start + length;
    let mut checksum = blake3::Hasher::new();
    let mut blobs = Vec::with_capacity(header.blobs.len());
    for &size in &header.blobs {
        let end = usize::try_from(size).ok().and_then(|size| offset.checked_add(size));
        let blob = end.and_then(|end| bytes.get(offset..end)).ok_or("truncated content")?;
        checksum.update(blob);
        blobs.push(blob.to_vec());
        offset += blob.len();
    }
    if offset != bytes.len() {
        return Err(format!("{} bytes after the content", bytes.len() - offset));
    }
    if checksum.finalize().to_hex().as_str() != header.checksum {
        return Err("checksum mismatch".into());
    }
    let entry = Entry { label: header.label.clone(), meta: header.meta.clone(), blobs };
    Ok((header, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            label: "quantize_dynamic".into(),
            meta: serde_json::json!({"changed": true}),
            blobs: vec![b"model bytes".to_vec(), Vec::new(), b"gguf".to_vec()],
        }
    }

    fn key(text: &str) -> Key {
        KeyBuilder::new("test").field("text", text.as_bytes()).finish()
    }

    /// The digits model, and a copy with a large initializer, a subgraph and metadata, so
    /// that tensor data passes both the buffer and the direct path of the hash.
    #[test]
    fn a_model_hashes_as_its_encoded_bytes() {
        use prost::Message;

        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/digits/model.onnx");
        let model = pipeline_passes::ir::load(Path::new(path)).unwrap();
        assert_eq!(hash_model(&model), blake3::hash(&model.encode_to_vec()));

        let mut larger = model.clone();
        let graph = larger.graph.as_mut().unwrap();
        let mut big = graph.initializer[0].clone();
        big.name = Some("big".into());
        big.raw_data = Some((0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>().into());
        graph.initializer.push(big);
        larger.doc_string = Some("x".repeat(70_000));
        let encoded = larger.encode_to_vec();
        assert!(encoded.len() > 3 * 64 * 1024);
        assert_eq!(hash_model(&larger), blake3::hash(&encoded));
        assert_ne!(hash_model(&larger), hash_model(&model));
    }

    #[test]
    fn stored_entries_read_back_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.get(&key("a")), None);
        cache.put(&key("a"), &entry()).unwrap();
        assert_eq!(cache.get(&key("a")), Some(entry()));
        assert_eq!(cache.get(&key("b")), None);

        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, key("a").hex());
        assert_eq!(listed[0].label, "quantize_dynamic");
        let file = dir.path().join(format!("{}.entry", key("a").hex()));
        assert_eq!(listed[0].size, std::fs::metadata(file).unwrap().len());
    }

    #[test]
    fn framing_keeps_fields_apart() {
        let ab = KeyBuilder::new("k").field("x", b"ab").field("y", b"").finish();
        let a_b = KeyBuilder::new("k").field("x", b"a").field("y", b"b").finish();
        assert_ne!(ab, a_b);
        assert_ne!(KeyBuilder::new("k").finish(), KeyBuilder::new("l").finish());
    }

    #[test]
    fn every_corruption_is_a_miss_and_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        cache.put(&key("a"), &entry()).unwrap();
        let path = dir.path().join(format!("{}.entry", key("a").hex()));
        let good = std::fs::read(&path).unwrap();

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut longer = good.clone();
        longer.push(0);
        let corruptions = [
            good[..good.len() - 3].to_vec(),
            good[..10].to_vec(),
            Vec::new(),
            flipped,
            longer,
            b"pipeline-cache1\n\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        ];
        for bad in corruptions {
            std::fs::write(&path, &bad).unwrap();
            assert_eq!(cache.get(&key("a")), None, "{bad:?} decoded");
            cache.put(&key("a"), &entry()).unwrap();
            assert_eq!(cache.get(&key("a")), Some(entry()));
        }
    }

    #[test]
    fn clear_removes_entries_and_temporary_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        cache.put(&key("a"), &entry()).unwrap();
        cache.put(&key("b"), &entry()).unwrap();
        std::fs::write(dir.path().join(".tmp-half"), b"half an entry").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not ours").unwrap();

        // A half-written file is no entry.
        assert_eq!(cache.list().unwrap().len(), 2);
        let cleared = cache.clear().unwrap();
        assert_eq!((cleared.entries, cleared.temporary), (2, 1));
        assert!(cache.list().unwrap().is_empty());
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(cache.get(&key("a")), None);
    }

    #[test]
    fn a_missing_folder_lists_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(&dir.path().join("absent"));
        assert!(cache.list().unwrap().is_empty());
        assert_eq!(cache.clear().unwrap(), Cleared::default());
    }
}
