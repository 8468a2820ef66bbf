//! Bases that do not come from a bootstrapper: a root tarball (`docker export`, or any tar of a
//! root tree) and a root made of host programs with the libraries they load.

pub mod binaries;
pub mod elf;
pub mod tarball;
