//! Which partition of a stream an event belongs to, so that N workers can
//! share one collection with every event evaluated by exactly one of them.
//!
//! An event's *partition key* (by default its `hostname`) hashes to one
//! of [`BUCKETS`] fixed buckets; partition K of N owns the buckets whose
//! number is K modulo N. Buckets, not partitions, are the unit that moves
//! when N changes: a worker of the new N takes each of its buckets over
//! from whichever old worker owned it last.
//!
//! The hash is MongoDB's own hashed-index hash (`$toHashedIndexKey`,
//! MongoDB ≥ 7.0): the first 8 bytes, little-endian, of the MD5 of a zero
//! seed, the value's canonical BSON type and its BSON bytes. So the server
//! can compute an event's bucket inside a change stream's `$match`, and a
//! writer that knows nothing of dac (or an older server) can store it at
//! insert time as a field (`dac-probe` writes [`BUCKET_FIELD`]); both give
//! the same bucket as [`bucket_of`]. A key that is missing or not text
//! counts as the empty string, in all three places.

use md5::{Digest, Md5};

/// How many buckets a stream's events hash to. Fixed: a partition count N
/// is at most this many, and changing N moves whole buckets.
pub const BUCKETS: u16 = 1024;

/// The partition key unless configured otherwise: the host an exec ran on,
/// which also scopes keyed state and is what correlations group by.
pub const DEFAULT_KEY: &str = "hostname";

/// The field `dac-probe` writes with each event's bucket, for servers that
/// cannot hash in a change stream (MongoDB < 7.0, nx-27017).
pub const BUCKET_FIELD: &str = "dac_bucket";

/// MongoDB's canonical type number of a string (and a symbol).
const CANONICAL_STRING: i32 = 15;

/// MongoDB's hashed-index hash of a string, `{$toHashedIndexKey: text}`.
pub fn hashed_index_key(text: &str) -> i64 {
    let mut md5 = Md5::new();
    md5.update(0i32.to_le_bytes()); // the seed
    md5.update(CANONICAL_STRING.to_le_bytes());
    // The BSON string: its length with the NUL, its bytes, the NUL. A
    // key longer than BSON allows cannot come from a document.
    let length = i32::try_from(text.len() + 1).unwrap_or(i32::MAX);
    md5.update(length.to_le_bytes());
    md5.update(text.as_bytes());
    md5.update([0u8]);
    let digest = md5.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// The bucket of a partition key's value: `|hash mod BUCKETS|`, as
/// MongoDB's `{$abs: {$mod: [hash, BUCKETS]}}` computes it (the remainder
/// takes the hash's sign). A missing key is the empty string.
pub fn bucket_of(key: Option<&str>) -> u16 {
    (hashed_index_key(key.unwrap_or("")) % i64::from(BUCKETS)).unsigned_abs() as u16
}

/// One of N partitions of a stream: `K/N`, K counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    index: u16,
    count: u16,
}

/// Why a `K/N` is not a partition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    #[error("{0:?} is not K/N (e.g. 0/3: the first of three partitions)")]
    Syntax(String),
    #[error("{0:?}: N must be 1 to {BUCKETS}")]
    Count(String),
    #[error("{0:?}: K counts from 0 and must be below N")]
    Index(String),
}

impl Partition {
    /// The whole stream: one partition, every bucket.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    pub fn new(index: u16, count: u16) -> Result<Partition, PartitionError> {
        let text = format!("{index}/{count}");
        if count == 0 || count > BUCKETS {
            return Err(PartitionError::Count(text));
        }
        if index >= count {
            return Err(PartitionError::Index(text));
        }
        Ok(Partition { index, count })
    }

    pub fn index(self) -> u16 {
        self.index
    }

    pub fn count(self) -> u16 {
        self.count
    }

    /// Whether this is the whole stream (N = 1).
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// Whether `bucket` is this partition's.
    pub fn owns(self, bucket: u16) -> bool {
        bucket % self.count == self.index
    }

    /// This partition's buckets, ascending.
    pub fn buckets(self) -> impl Iterator<Item = u16> {
        (self.index..BUCKETS).step_by(usize::from(self.count))
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Partition {
    type Err = PartitionError;

    fn from_str(text: &str) -> Result<Partition, PartitionError> {
        let syntax = || PartitionError::Syntax(text.to_owned());
        let (index, count) = text.split_once('/').ok_or_else(syntax)?;
        let number = |part: &str| part.trim().parse::<u32>().map_err(|_| syntax());
        let (index, count) = (number(index)?, number(count)?);
        let count = u16::try_from(count).map_err(|_| PartitionError::Count(text.to_owned()))?;
        let index = u16::try_from(index).map_err(|_| PartitionError::Index(text.to_owned()))?;
        Partition::new(index, count).map_err(|err| match err {
            PartitionError::Count(_) => PartitionError::Count(text.to_owned()),
            PartitionError::Index(_) => PartitionError::Index(text.to_owned()),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MongoDB's own test vectors for its hashed-index hash of strings
    /// (src/mongo/db/hasher_test.cpp, `HashString`).
    #[test]
    fn the_hash_is_mongodbs_hashed_index_key() {
        assert_eq!(hashed_index_key("abc"), 8478485326885698097);
        assert_eq!(hashed_index_key(""), 2049396243249673340);
    }

    #[test]
    fn a_bucket_is_the_remainders_absolute_value_and_a_missing_key_is_empty_text() {
        let negative = (0..200).map(|n| format!("host-{n}")).find(|h| hashed_index_key(h) < 0).unwrap();
        let hash = hashed_index_key(&negative);
        assert_eq!(i64::from(bucket_of(Some(&negative))), -(hash % 1024));
        assert_eq!(bucket_of(None), bucket_of(Some("")));
        assert!((0..1000).map(|n| bucket_of(Some(&format!("h{n}")))).all(|b| b < BUCKETS));
    }

    #[test]
    fn every_bucket_has_exactly_one_partition_for_any_n() {
        for count in [1, 2, 3, 5, 7, 1024] {
            let mut owners = vec![0u32; usize::from(BUCKETS)];
            for index in 0..count {
                let partition = Partition::new(index, count).unwrap();
                for bucket in partition.buckets() {
                    assert!(partition.owns(bucket));
                    owners[usize::from(bucket)] += 1;
                }
            }
            assert!(owners.iter().all(|&n| n == 1), "N = {count}");
        }
    }

    #[test]
    fn partitions_parse_and_refuse_with_the_reason() {
        assert_eq!("2/5".parse::<Partition>().unwrap(), Partition::new(2, 5).unwrap());
        assert_eq!("0/1".parse::<Partition>().unwrap(), Partition::WHOLE);
        assert_eq!("3/3".parse::<Partition>(), Err(PartitionError::Index("3/3".into())));
        assert_eq!("0/0".parse::<Partition>(), Err(PartitionError::Count("0/0".into())));
        assert_eq!("0/2000".parse::<Partition>(), Err(PartitionError::Count("0/2000".into())));
        assert_eq!("1".parse::<Partition>(), Err(PartitionError::Syntax("1".into())));
        assert_eq!("a/2".parse::<Partition>(), Err(PartitionError::Syntax("a/2".into())));
        assert_eq!(Partition::new(1, 3).unwrap().to_string(), "1/3");
    }
}
