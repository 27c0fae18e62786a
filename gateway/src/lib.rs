//! The gateway's parts that need no sockets, NATS or HTTP, as a library: judging a client frame
//! (`inbound`), the per-socket limits (`limits`) and the neighbouring systems' protocols
//! (`dialects`). The binary (`main.rs`) holds everything else;
//! these are split out so the fuzz targets (`fuzz/`) call the very code the gateway runs.

pub mod dialects;
pub mod inbound;
pub mod limits;
