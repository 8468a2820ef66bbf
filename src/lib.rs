//! stemcell-builder: builds hardened Linux OS images (and, later, BOSH stemcells).
//!
//! The library never reads `std::env::args`; `cli.rs` turns flags into plain
//! plans that the modules below take.

pub mod archive;
pub mod audit;
pub mod bump;
pub mod cache;
pub mod checksum;
pub mod chroot;
pub mod cli;
pub mod disk;
pub mod doctor;
pub mod export;
pub mod fsutil;
pub mod inroot;
pub mod layers;
pub mod os;
pub mod os_image;
pub mod output;
pub mod packages;
pub mod pipeline;
pub mod progress;
pub mod rootfs;
pub mod s3;
pub mod sandbox;
pub mod smoke;
pub mod stage;
pub mod stemcell;
pub mod terminal;
