pub struct DemoTask;
impl DemoTask {
    pub async fn stop(self) {}
}
pub async fn start(_app: &crate::App) -> anyhow::Result<DemoTask> {
    Ok(DemoTask)
}
