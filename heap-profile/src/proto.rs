//! The pprof `profile.proto` messages (github.com/google/pprof, `proto/profile.proto`), declared
//! by hand with `prost`'s derive: only the fields this crate writes and reads.

/// A whole profile.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each value of a sample measures.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples: one per distinct call stack here.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// The mapped files the addresses lie in.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// One per distinct address.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions named by locations' lines (none when unsymbolised).
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string, referred to by index; entry 0 is the empty string.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Time of collection (nanoseconds since the Unix epoch).
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// What the period counts.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// The sampling rate: bytes between samples on average.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string table indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Index into `sample_type` of the type shown by default.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A type and unit (string table indices).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    /// e.g. `inuse_space`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// e.g. `bytes`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One call stack and its values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Locations, innermost first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

/// A mapped file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    /// Non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the mapping.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// One past its last address.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// The file offset mapped at `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// The file's path (string table index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Build id (string table index; 0 when unknown).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Whether locations in it carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
}

/// One code address.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The mapping holding it (0: none known).
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The address (of the call instruction, for a return address).
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Source lines (innermost inlined function first); empty when unsymbolised.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

/// A source line of a location.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// The line number.
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// A function.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// Non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Its name (string table index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Its mangled name (string table index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Its source file (string table index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
}
