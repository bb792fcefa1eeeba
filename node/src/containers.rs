//! Which container instances run on this node now: (pod uid, container name) to the
//! restartCount of the running instance. Pod workers record starts and exits; the agent's
//! API reads it (exec needs a running container, a followed log ends with its instance).

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Running {
    by_container: Mutex<HashMap<(String, String), i32>>,
}

impl Running {
    pub fn started(&self, uid: &str, container: &str, restart_count: i32) {
        self.lock()
            .insert((uid.to_string(), container.to_string()), restart_count);
    }

    /// The instance `restart_count` has ended (a newer one may already be recorded).
    pub fn exited(&self, uid: &str, container: &str, restart_count: i32) {
        let mut m = self.lock();
        let key = (uid.to_string(), container.to_string());
        if m.get(&key) == Some(&restart_count) {
            m.remove(&key);
        }
    }

    /// The restartCount of the running instance, if one runs.
    pub fn get(&self, uid: &str, container: &str) -> Option<i32> {
        self.lock()
            .get(&(uid.to_string(), container.to_string()))
            .copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), i32>> {
        self.by_container.lock().expect("running containers lock")
    }
}
