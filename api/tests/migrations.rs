//! Migrations apply, roll back and re-apply cleanly on both backends.

mod common;

use migration::{Migrator, MigratorTrait, SchemaManager};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

const TABLES: [&str; 13] = [
    "tenants",
    "clients",
    "sites",
    "zones",
    "bms_units",
    "batteries",
    "battery_samples",
    "users",
    "audit_log",
    "api_keys",
    "sessions",
    "recovery_codes",
    "oidc_logins",
];

async fn tables_present(db: &DatabaseConnection) -> Vec<bool> {
    let manager = SchemaManager::new(db);
    let mut out = Vec::new();
    for t in TABLES {
        out.push(manager.has_table(t).await.expect("has_table"));
    }
    out
}

async fn up_down_up(db: DatabaseConnection) {
    assert_eq!(tables_present(&db).await, vec![false; TABLES.len()]);
    Migrator::up(&db, None).await.expect("up");
    assert_eq!(tables_present(&db).await, vec![true; TABLES.len()]);
    assert!(
        Migrator::get_pending_migrations(&db)
            .await
            .unwrap()
            .is_empty()
    );
    let tenants = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM tenants WHERE slug = 'default'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tenants.try_get::<i64>("", "n").unwrap(),
        1,
        "the default tenant is seeded"
    );

    Migrator::down(&db, None).await.expect("down");
    assert_eq!(tables_present(&db).await, vec![false; TABLES.len()]);
    Migrator::up(&db, None).await.expect("up again");
    assert_eq!(tables_present(&db).await, vec![true; TABLES.len()]);
}

#[tokio::test]
async fn sqlite_up_down_up() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    up_down_up(Database::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_up_down_up() {
    let url = common::fresh_pg_url().await;
    up_down_up(Database::connect(&url).await.unwrap()).await;
}
