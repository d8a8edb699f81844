//! CPU seconds a case costs: ours (the agent or tool process, or this process for in-process cases) and the
//! MongoDB server's. The server and the agent share this machine's cores, so their sum over the core count is the
//! shortest wall time any schedule of a case could reach: what shows whether a ratio is a bottleneck to remove or
//! the machine's limit.

/// Linux reports process times in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU seconds of process `pid` ("self" for this one) so far, from `/proc/<pid>/stat`.
pub fn process_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; after it, utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / TICKS_PER_SEC)
}

/// CPU used by this process and the server from `start` until `stop`.
pub struct Meter {
    server_pid: Option<String>,
    own: Option<f64>,
    server: Option<f64>,
}

impl Meter {
    /// Starts measuring; `server_pid` is the MongoDB server's, when the harness started it (and so knows it).
    pub fn start(server_pid: Option<&str>) -> Self {
        Meter {
            server_pid: server_pid.map(String::from),
            own: process_secs("self"),
            server: server_pid.and_then(process_secs),
        }
    }

    /// (this process's CPU seconds, the server's) since `start`.
    pub fn stop(&self) -> (Option<f64>, Option<f64>) {
        let since = |before: Option<f64>, now: Option<f64>| Some(now? - before?);
        (since(self.own, process_secs("self")), since(self.server, self.server_pid.as_deref().and_then(process_secs)))
    }
}
