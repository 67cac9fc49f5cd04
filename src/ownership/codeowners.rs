//! CODEOWNERS files (being written).
