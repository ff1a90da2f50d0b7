//! `profile.proto` (github.com/google/pprof/proto/profile.proto, package
//! `perftools.profiles`) as prost messages: what agents write and the collector reads.
//! Field meanings are those of the upstream file; every integer naming a string is an
//! index into [`Profile::string_table`].

use prost::Message;

/// A whole profile: samples, their locations and functions, and the string table every
/// name points into.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    /// `sample_type` of profile.proto.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// `sample` of profile.proto.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// `mapping` of profile.proto.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// `location` of profile.proto.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// `function` of profile.proto.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// `string_table` of profile.proto.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// `drop_frames` of profile.proto.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// `keep_frames` of profile.proto.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// `time_nanos` of profile.proto.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// `duration_nanos` of profile.proto.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// `period_type` of profile.proto.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// `period` of profile.proto.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// `comment` of profile.proto.
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// `default_sample_type` of profile.proto.
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A sample value's type and unit, as string-table indexes.
#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    /// `type` of profile.proto.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// `unit` of profile.proto.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack (location ids, leaf first) with its values and labels.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Leaf first.
    /// `location_id` of profile.proto.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// `value` of profile.proto.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// `label` of profile.proto.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample label: a string (`str`) or a number (`num`, `num_unit`), each a string-table index but `num`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// `key` of profile.proto.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// `str` of profile.proto.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// `num` of profile.proto.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// `num_unit` of profile.proto.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A mapped binary; Holmes writes one, marked as already symbolized.
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    /// `id` of profile.proto.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `memory_start` of profile.proto.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// `memory_limit` of profile.proto.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// `file_offset` of profile.proto.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// `filename` of profile.proto.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// `build_id` of profile.proto.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// `has_functions` of profile.proto.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// `has_filenames` of profile.proto.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// `has_line_numbers` of profile.proto.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// `has_inline_frames` of profile.proto.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A program counter with its (inlined) lines, innermost first.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    /// `id` of profile.proto.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `mapping_id` of profile.proto.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// `address` of profile.proto.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost (inlined) first; the last line is the function the code belongs to.
    /// `line` of profile.proto.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// `is_folded` of profile.proto.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// A function and line at a location.
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    /// `function_id` of profile.proto.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// `line` of profile.proto.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// `column` of profile.proto.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function: names and file as string-table indexes.
#[derive(Clone, PartialEq, Message)]
pub struct Function {
    /// `id` of profile.proto.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// `name` of profile.proto.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// `system_name` of profile.proto.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// `filename` of profile.proto.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// `start_line` of profile.proto.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
