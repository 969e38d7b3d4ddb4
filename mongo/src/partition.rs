//! One partition of a collection's change stream, and how a worker takes
//! its buckets over from the checkpoints of an earlier partition count.
//!
//! Partition K of N reads only the events whose bucket
//! ([`dac_event::partition`]) is K modulo N, filtered by the server inside
//! the change stream's pipeline, either
//! - on the bucket field a writer stored at insert time (`dac-probe`
//!   writes `dac_bucket`; any MongoDB, and nx-27017), or
//! - on MongoDB's own hash of the partition key (`$toHashedIndexKey`,
//!   MongoDB ≥ 7.0; nothing to store).
//!
//! Each partition has its own checkpoint. When N changes, a worker of the
//! new N has none: for each of its buckets it finds the checkpoint that got
//! furthest with that bucket (any earlier N, its own included), starts at
//! the earliest of those positions, takes each bucket's state from the
//! checkpoint it chose, and skips a bucket's events up to where that
//! checkpoint had evaluated them. Events it evaluates again (after its
//! previous owner's last checkpoint) give alerts with the same `_id`s,
//! which the alert collection keeps once. Ordering positions needs the
//! server's resume tokens to be comparable: MongoDB's (4.2 and later) are
//! hex strings in stream order, nx-27017's count its change rows.

use dac_event::partition::{bucket_of, Partition, BUCKETS, BUCKET_FIELD, DEFAULT_KEY};
use mongodb::bson::{doc, Bson, Document};
use std::cmp::Ordering;

/// How the server tells a partition's events from the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketFilter {
    /// On the `dac_bucket` field written at insert time: any MongoDB.
    Field,
    /// On `$toHashedIndexKey` of the partition key: MongoDB ≥ 7.0.
    Hashed,
}

named_values!(BucketFilter { Field = "field", Hashed = "hashed" });

/// Which part of the stream a worker reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    pub partition: Partition,
    /// The field whose value decides an event's bucket (dotted path).
    pub key: String,
    pub filter: BucketFilter,
}

impl Default for Partitioning {
    /// The whole stream.
    fn default() -> Partitioning {
        Partitioning { partition: Partition::WHOLE, key: DEFAULT_KEY.to_owned(), filter: BucketFilter::Field }
    }
}

/// Where bucket-less events go: an index past the last bucket, owned by
/// partition 0 of every N (field filter: a document whose `dac_bucket` is
/// missing or not a bucket number).
pub(crate) const STRAY: usize = BUCKETS as usize;

/// Every bucket, and the stray one.
pub(crate) const ROUTES: usize = STRAY + 1;

/// Whether `partition` owns route `route` (a bucket, or [`STRAY`]).
pub(crate) fn owns(partition: Partition, route: usize) -> bool {
    match u16::try_from(route) {
        Ok(bucket) if route < STRAY => partition.owns(bucket),
        _ => partition.index() == 0,
    }
}

impl Partitioning {
    /// The `$match` stage that keeps this partition's inserts, or `None`
    /// for the whole stream. Every document matches exactly one partition
    /// of any N: with the field filter, partition 0 takes what no other
    /// bucket number matches (missing, null, not a number, out of range)
    /// with one `$nin`, which nx-27017 serves too.
    pub fn match_stage(&self) -> Option<Document> {
        if self.partition.is_whole() {
            return None;
        }
        let mine: Vec<i32> = self.partition.buckets().map(i32::from).collect();
        Some(match self.filter {
            BucketFilter::Field => {
                let field = format!("fullDocument.{BUCKET_FIELD}");
                if self.partition.index() == 0 {
                    let others: Vec<i32> = (0..BUCKETS).filter(|&b| !self.partition.owns(b)).map(i32::from).collect();
                    doc! { field: { "$nin": others } }
                } else {
                    doc! { field: { "$in": mine } }
                }
            }
            BucketFilter::Hashed => {
                let key = format!("$fullDocument.{}", self.key);
                // Not text (or missing) hashes as the empty text, as
                // `bucket_of` does.
                let text = doc! { "$cond": [{ "$eq": [{ "$type": &key }, "string"] }, &key, ""] };
                let bucket = doc! { "$abs": { "$mod": [{ "$toHashedIndexKey": text }, i32::from(BUCKETS)] } };
                doc! { "$expr": { "$in": [bucket, mine] } }
            }
        })
    }

    /// The route of a document this partition received: its bucket, or
    /// [`STRAY`]; and whether its stored bucket disagrees with its key's.
    pub(crate) fn route(&self, document: &Document) -> (usize, bool) {
        let key = text_at(document, &self.key);
        match self.filter {
            BucketFilter::Hashed => (usize::from(bucket_of(key)), false),
            BucketFilter::Field => match document.get(BUCKET_FIELD).and_then(bucket_number) {
                Some(bucket) => (usize::from(bucket), bucket != bucket_of(key)),
                None => (STRAY, false),
            },
        }
    }

    /// The document describing this partitioning in a checkpoint.
    pub(crate) fn describe(&self) -> Document {
        doc! {
            "index": i32::from(self.partition.index()),
            "count": i32::from(self.partition.count()),
            "key": &self.key,
            "filter": self.filter.name(),
            "buckets": i32::from(BUCKETS),
        }
    }
}

/// A bucket number stored in a document: an integer (of any BSON number
/// type) below [`BUCKETS`].
fn bucket_number(value: &Bson) -> Option<u16> {
    let number = match value {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        Bson::Double(x) if x.fract() == 0.0 && x.abs() < 1e9 => *x as i64,
        _ => return None,
    };
    u16::try_from(number).ok().filter(|&b| b < BUCKETS)
}

/// The text at a dotted path of a document, if it is text.
fn text_at<'a>(document: &'a Document, path: &str) -> Option<&'a str> {
    let mut current = document;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        match current.get(part)? {
            Bson::String(text) if parts.peek().is_none() => return Some(text),
            Bson::Document(inner) => current = inner,
            _ => return None,
        }
    }
    None
}

/// The stream order of two resume tokens (as stored: `{_data: …}`), when
/// the server's tokens can be ordered: MongoDB's are hex strings whose
/// order is the stream's, nx-27017's are `nx:ROW`.
pub(crate) fn token_order(a: &Bson, b: &Bson) -> Option<Ordering> {
    let data = |token: &Bson| match token {
        Bson::Document(document) => document.get_str("_data").ok().map(str::to_owned),
        _ => None,
    };
    let (a, b) = (data(a)?, data(b)?);
    match (a.strip_prefix("nx:"), b.strip_prefix("nx:")) {
        (Some(a), Some(b)) => Some(a.parse::<u64>().ok()?.cmp(&b.parse::<u64>().ok()?)),
        (None, None) if is_hex(&a) && is_hex(&b) => Some(a.to_ascii_uppercase().cmp(&b.to_ascii_uppercase())),
        _ => None,
    }
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A stored checkpoint of the same collection, as a takeover reads it.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub id: String,
    pub partition: Partition,
    pub key: String,
    /// The position its state (if any) belongs to, else its position:
    /// where it would resume.
    pub resume: Bson,
    /// Buckets whose events it had evaluated further than `resume` (it
    /// took them over from a checkpoint that had got further).
    pub skip: Vec<(Bson, Vec<usize>)>,
    /// Its `state` entry, when it names one.
    pub state: Option<Document>,
}

impl Candidate {
    /// Reads a checkpoint document; `None` when it is not one (a state
    /// chunk) or is damaged (it is then ignored, and said so).
    pub fn read(document: &Document) -> Option<Candidate> {
        let id = document.get_str("_id").ok()?.to_owned();
        let state = document.get_document("state").ok().cloned();
        let resume = match &state {
            Some(state) => state.get("resume_token")?.clone(),
            None => document.get("resume_token")?.clone(),
        };
        let integer = |d: &Document, key: &str| match d.get(key)? {
            Bson::Int32(n) => u16::try_from(*n).ok(),
            Bson::Int64(n) => u16::try_from(*n).ok(),
            _ => None,
        };
        let (partition, key) = match document.get_document("partition") {
            // A checkpoint of dac before partitions: the whole stream.
            Err(_) => (Partition::WHOLE, DEFAULT_KEY.to_owned()),
            Ok(described) => {
                let partition = Partition::new(integer(described, "index")?, integer(described, "count")?).ok()?;
                if integer(described, "buckets") != Some(BUCKETS) {
                    return None;
                }
                (partition, described.get_str("key").ok()?.to_owned())
            }
        };
        let mut skip = Vec::new();
        for entry in document.get_array("skip").map(|a| a.as_slice()).unwrap_or_default() {
            let entry = entry.as_document()?;
            let routes = entry
                .get_array("buckets")
                .ok()?
                .iter()
                .filter_map(|b| b.as_i32().and_then(|b| usize::try_from(b).ok()).filter(|&b| b < ROUTES))
                .collect();
            skip.push((entry.get("through")?.clone(), routes));
        }
        Some(Candidate { id, partition, key, resume, skip, state })
    }

    /// How far it had evaluated `route`'s events (the position after which
    /// they are new to its state).
    fn reached(&self, route: usize) -> &Bson {
        self.skip.iter().find(|(_, routes)| routes.contains(&route)).map_or(&self.resume, |(through, _)| through)
    }
}

/// Where a partition starts, from the checkpoints before it.
#[derive(Debug, Default)]
pub(crate) struct Takeover {
    /// The earliest position any of its buckets needs; `None`: from now.
    pub start: Option<Bson>,
    /// Per route: the position up to which its events were evaluated
    /// already (skipped when read again).
    pub bounds: Vec<Option<Bson>>,
    /// Per candidate chosen: its index and the routes taken from it.
    pub taken: Vec<(usize, Vec<usize>)>,
}

/// Why a partition cannot start from the checkpoints before it.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error(
        "checkpoint {id} partitions by `{theirs}`, this worker by `{ours}`: their buckets do not match. Keep the key, or start over in a new --config-collection (or delete the old checkpoints)"
    )]
    OtherKey { id: String, theirs: String, ours: String },
    #[error(
        "the server's resume tokens cannot be ordered ({a}, {b}), so buckets cannot move between partitions: keep the partition count, or start over in a new --config-collection"
    )]
    Unordered { a: String, b: String },
}

/// Plans where `mine` starts from the stored checkpoints `candidates`:
/// for each of its routes, the one that got furthest with it.
pub(crate) fn plan(mine: &Partitioning, candidates: &[Candidate]) -> Result<Takeover, TakeoverError> {
    let compare = |a: &Bson, b: &Bson| {
        token_order(a, b).ok_or_else(|| TakeoverError::Unordered { a: a.to_string(), b: b.to_string() })
    };
    let mut takeover = Takeover { bounds: vec![None; ROUTES], ..Takeover::default() };
    let mut chosen: Vec<Option<usize>> = vec![None; ROUTES];
    for route in (0..ROUTES).filter(|&r| owns(mine.partition, r)) {
        for (index, candidate) in candidates.iter().enumerate() {
            if !owns(candidate.partition, route) {
                continue;
            }
            // A whole-stream checkpoint that skips nothing holds one position
            // for every bucket, whatever the key.
            if candidate.key != mine.key && !(candidate.partition.is_whole() && candidate.skip.is_empty()) {
                return Err(TakeoverError::OtherKey {
                    id: candidate.id.clone(),
                    theirs: candidate.key.clone(),
                    ours: mine.key.clone(),
                });
            }
            let reached = candidate.reached(route);
            let better = match &takeover.bounds[route] {
                None => true,
                // Ties keep the first: the caller lists this partition's own
                // checkpoint first.
                Some(best) => compare(reached, best)? == Ordering::Greater,
            };
            if better {
                takeover.bounds[route] = Some(reached.clone());
                chosen[route] = Some(index);
            }
        }
    }
    for bound in takeover.bounds.iter().flatten() {
        let earlier = match &takeover.start {
            None => true,
            Some(start) => compare(bound, start)? == Ordering::Less,
        };
        if earlier {
            takeover.start = Some(bound.clone());
        }
    }
    for (route, index) in chosen.iter().enumerate() {
        let Some(index) = *index else { continue };
        match takeover.taken.iter_mut().find(|(i, _)| *i == index) {
            Some((_, routes)) => routes.push(route),
            None => takeover.taken.push((index, vec![route])),
        }
    }
    Ok(takeover)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nx(row: u64) -> Bson {
        Bson::Document(doc! { "_data": format!("nx:{row}") })
    }

    fn candidate(id: &str, partition: &str, resume: u64) -> Candidate {
        Candidate {
            id: id.into(),
            partition: partition.parse().unwrap(),
            key: "hostname".into(),
            resume: nx(resume),
            skip: Vec::new(),
            state: None,
        }
    }

    fn mine(partition: &str) -> Partitioning {
        Partitioning { partition: partition.parse().unwrap(), ..Partitioning::default() }
    }

    #[test]
    fn tokens_order_as_the_stream_does_or_not_at_all() {
        assert_eq!(token_order(&nx(9), &nx(10)), Some(Ordering::Less));
        let hex = |s: &str| Bson::Document(doc! { "_data": s });
        assert_eq!(token_order(&hex("8263A1"), &hex("8263a2")), Some(Ordering::Less));
        assert_eq!(token_order(&hex("8263A1"), &hex("8263A1")), Some(Ordering::Equal));
        assert_eq!(token_order(&hex("8263A1"), &nx(1)), None);
        assert_eq!(token_order(&Bson::String("x".into()), &nx(1)), None);
    }

    #[test]
    fn each_bucket_comes_from_the_checkpoint_that_got_furthest_with_it() {
        // Three workers, then two: 0/2 owns the even buckets, which 0/3,
        // 1/3 and 2/3 each held a third of.
        let old = [candidate("a", "0/3", 100), candidate("b", "1/3", 80), candidate("c", "2/3", 120)];
        let takeover = plan(&mine("0/2"), &old).unwrap();
        assert_eq!(takeover.start, Some(nx(80)));
        for route in (0..ROUTES).filter(|&r| owns("0/2".parse().unwrap(), r)) {
            let expected = if route == STRAY { 100 } else { [100, 80, 120][route % 3] };
            assert_eq!(takeover.bounds[route], Some(nx(expected)), "route {route}");
        }
        assert!(takeover.bounds[1].is_none(), "an odd bucket is not 0/2's");
        assert_eq!(takeover.taken.len(), 3);
        let from_b = &takeover.taken.iter().find(|(i, _)| *i == 1).unwrap().1;
        assert!(from_b.iter().all(|&r| r % 3 == 1 && r % 2 == 0));
    }

    #[test]
    fn a_later_partition_count_wins_over_a_stale_one_and_skips_count() {
        // 3 → 5 → 2: the 5-worker checkpoints are further than the 3s.
        let mut five = candidate("p", "1/5", 200);
        five.skip = vec![(nx(260), vec![1])];
        let old = [candidate("a", "0/3", 100), candidate("b", "1/3", 90), five];
        let takeover = plan(&mine("1/2"), &old).unwrap();
        assert_eq!(takeover.bounds[1], Some(nx(260)), "bucket 1: 1/5's skip bound");
        assert_eq!(takeover.bounds[11], Some(nx(200)), "bucket 11: 1/5's position");
        assert_eq!(takeover.bounds[3], Some(nx(100)), "bucket 3: only 0/3 had it");
        assert_eq!(takeover.start, Some(nx(90)));
    }

    #[test]
    fn buckets_nobody_had_start_from_the_earliest_known_position_or_now() {
        let takeover = plan(&mine("1/2"), &[candidate("a", "0/2", 50)]).unwrap();
        assert!(takeover.start.is_none() && takeover.taken.is_empty());
        let takeover = plan(&mine("0/1"), &[candidate("a", "0/2", 50)]).unwrap();
        assert_eq!(takeover.start, Some(nx(50)));
        assert!(takeover.bounds[1].is_none());
    }

    #[test]
    fn another_partition_key_or_unordered_tokens_are_refused() {
        let mut other = candidate("a", "0/2", 50);
        other.key = "user".into();
        assert!(matches!(plan(&mine("0/3"), &[other]), Err(TakeoverError::OtherKey { .. })));
        let mut foreign = candidate("b", "1/2", 60);
        foreign.resume = Bson::Document(doc! { "_data": "8200" });
        let err = plan(&mine("0/1"), &[candidate("a", "0/2", 50), foreign]).unwrap_err();
        assert!(matches!(err, TakeoverError::Unordered { .. }));
    }

    #[test]
    fn the_field_filter_gives_every_document_exactly_one_partition() {
        let documents = [
            doc! { "hostname": "web-1", "dac_bucket": i32::from(bucket_of(Some("web-1"))) },
            doc! { "hostname": "web-2" },
            doc! { "dac_bucket": "7" },
            doc! { "dac_bucket": 4096 },
            doc! { "dac_bucket": 5.0 },
        ];
        for count in [1u16, 2, 3] {
            for document in &documents {
                let owners = (0..count)
                    .filter(|&k| {
                        let p =
                            Partitioning { partition: Partition::new(k, count).unwrap(), ..Partitioning::default() };
                        owns(p.partition, p.route(document).0)
                    })
                    .count();
                assert_eq!(owners, 1, "{document} with N = {count}");
            }
        }
        let p = mine("0/2");
        assert_eq!(p.route(&doc! { "hostname": "h", "dac_bucket": 4 }), (4, bucket_of(Some("h")) != 4));
        assert_eq!(p.route(&doc! { "dac_bucket": -1 }).0, STRAY);
    }

    #[test]
    fn the_server_side_filters_name_the_buckets() {
        assert!(mine("0/1").match_stage().is_none());
        let stage = mine("1/4").match_stage().unwrap();
        let list = stage.get_document("fullDocument.dac_bucket").unwrap().get_array("$in").unwrap();
        assert_eq!(list.len(), 256);
        assert_eq!(list[0], Bson::Int32(1));
        let stage = mine("0/4").match_stage().unwrap();
        assert_eq!(stage.get_document("fullDocument.dac_bucket").unwrap().get_array("$nin").unwrap().len(), 768);
        let hashed = Partitioning { filter: BucketFilter::Hashed, ..mine("2/3") };
        let text = hashed.match_stage().unwrap().to_string();
        assert!(text.contains("$toHashedIndexKey") && text.contains("$fullDocument.hostname"), "{text}");
    }
}
