//! Users, roles, grants and tokens with authentication on, over the REST API of a real
//! in-process cluster: what a user may read they see, what they may not they neither read
//! nor see, and jobs belong to whoever ran them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::TestCluster;
use crate::rest::{Api, assert_error};

async fn secured_cluster() -> (TestCluster, Api) {
    let cluster = TestCluster::start_with(1, |c| {
        c.coordinator.auth = true;
        c.coordinator.admin_password = Some("adm1n".to_string());
    })
    .await;
    let data = cluster.dir.path().join("demo");
    quarry_coordinator::demo::install(&cluster.cluster.coordinator.engine, &data, 1000)
        .await
        .expect("demo data");
    let admin = login(&cluster, "admin", "adm1n").await;
    (cluster, admin)
}

async fn login(cluster: &TestCluster, user: &str, password: &str) -> Api {
    Api::logged_in(&cluster.http(), user, password).await
}

async fn try_sql(api: &Api, sql: &str) -> (StatusCode, Value) {
    api.post("/api/v1/sql", json!({"sql": sql})).await
}

fn names(body: &Value, column: &str) -> Vec<String> {
    body["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r[column].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What ada sees of demo.orders everywhere a user can look.
async fn sees_orders(ada: &Api) -> [bool; 4] {
    let shown = names(&ada.sql("SHOW TABLES").await, "table_name");
    let info = names(
        &ada.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'demo'")
            .await,
        "table_name",
    );
    let (_, datasets) = ada.get("/api/v1/catalog/schemas/demo/datasets").await;
    let rest = datasets["datasets"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d["name"] == "orders"));
    let (status, _) = try_sql(ada, "SELECT count(*) AS n FROM demo.orders").await;
    [
        shown.contains(&"orders".to_string()),
        info.contains(&"orders".to_string()),
        rest,
        status == StatusCode::OK,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_decide_what_users_read_and_see() {
    let (cluster, admin) = secured_cluster().await;
    admin.sql("CREATE USER ada PASSWORD 'ada-pw'").await;
    admin
        .sql(
            "CREATE VIEW demo.by_city AS SELECT city, count(*) AS n FROM demo.orders GROUP BY city",
        )
        .await;
    let ada = login(&cluster, "ada", "ada-pw").await;

    // Nothing granted: not readable, not listed anywhere.
    assert_eq!(sees_orders(&ada).await, [false; 4]);
    let (status, body) = try_sql(&ada, "SELECT * FROM demo.orders").await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "demo.orders",
    );
    let (status, body) = ada
        .get("/api/v1/catalog/schemas/demo/datasets/orders")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "demo.orders",
    );
    let (_, schemas) = ada.get("/api/v1/catalog/schemas").await;
    assert!(
        !schemas.to_string().contains("\"demo\""),
        "schema demo listed to a user who can read nothing in it: {schemas}"
    );

    // A view is a boundary: SELECT on it suffices, the base table stays closed.
    admin
        .sql("GRANT SELECT ON VIEW demo.by_city TO USER ada")
        .await;
    let cities = ada.sql("SELECT sum(n) AS n FROM demo.by_city").await;
    assert_eq!(cities["rows"], json!([{"n": 1000}]));
    assert_eq!(sees_orders(&ada).await, [false; 4]);

    // Through a role, everywhere at once; and gone again within one statement.
    admin.sql("CREATE ROLE analyst").await;
    admin
        .sql("GRANT SELECT ON TABLE demo.orders TO ROLE analyst")
        .await;
    admin.sql("GRANT ROLE analyst TO USER ada").await;
    assert_eq!(sees_orders(&ada).await, [true; 4]);
    let grants = ada.sql("SHOW GRANTS").await;
    assert!(grants.to_string().contains("analyst"), "{grants}");
    admin
        .sql("REVOKE SELECT ON TABLE demo.orders FROM ROLE analyst")
        .await;
    assert_eq!(sees_orders(&ada).await, [false; 4]);

    // A schema-wide grant covers its tables.
    admin.sql("GRANT SELECT ON SCHEMA demo TO USER ada").await;
    assert_eq!(sees_orders(&ada).await, [true; 4]);
    admin
        .sql("REVOKE SELECT ON SCHEMA demo FROM USER ada")
        .await;

    // Only admins manage users, sources and raw locations; grants need MANAGE GRANTS.
    for sql in [
        "CREATE USER eve PASSWORD 'x'",
        "CREATE SOURCE s TYPE local WITH (root = '/')",
        "CREATE EXTERNAL TABLE etc STORED AS CSV LOCATION '/etc/passwd'",
        "GRANT SELECT ON TABLE demo.orders TO USER ada",
        "CREATE SCHEMA mine",
    ] {
        let (status, body) = try_sql(&ada, sql).await;
        assert_error(
            status,
            &body,
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "ada",
        );
    }
    // A view can only expose what its creator may read.
    admin
        .sql("GRANT CREATE TABLE ON SCHEMA demo TO USER ada")
        .await;
    let (status, body) = try_sql(&ada, "CREATE VIEW demo.leak AS SELECT * FROM demo.orders").await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "demo.orders",
    );
    ada.sql("CREATE VIEW demo.mine AS SELECT * FROM demo.by_city")
        .await;
    ada.sql("SELECT * FROM demo.mine").await;

    // Grants on objects that do not exist, or to nobody, are clear errors.
    let (status, body) = try_sql(&admin, "GRANT SELECT ON TABLE demo.nope TO USER ada").await;
    assert_error(
        status,
        &body,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "demo.nope",
    );
    let (status, body) = try_sql(&admin, "GRANT SELECT ON SCHEMA demo TO USER nobody").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND", "nobody");

    // Users see themselves only; passwords never reach the job history.
    assert_eq!(
        names(&ada.sql("SELECT name FROM sys.users").await, "name"),
        ["ada"]
    );
    let history = admin.sql("SELECT sql FROM sys.jobs").await.to_string();
    assert!(
        history.contains("CREATE USER ada PASSWORD '****'"),
        "{history}"
    );
    assert!(!history.contains("ada-pw"), "{history}");
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_belong_to_their_user() {
    let (cluster, admin) = secured_cluster().await;
    admin.sql("CREATE USER ada PASSWORD 'a'").await;
    admin.sql("CREATE USER bob PASSWORD 'b'").await;
    let ada = login(&cluster, "ada", "a").await;
    let bob = login(&cluster, "bob", "b").await;
    let (status, job) = ada
        .post(
            "/api/v1/sql",
            json!({"sql": "SELECT 'ada-secret' AS marker", "async": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().expect("job id").to_string();
    ada.wait_job(&id).await;

    for path in [
        format!("/api/v1/jobs/{id}"),
        format!("/api/v1/jobs/{id}/results"),
    ] {
        let (status, body) = bob.get(&path).await;
        assert_error(
            status,
            &body,
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "another user",
        );
    }
    let (status, body) = bob
        .post(&format!("/api/v1/jobs/{id}/cancel"), json!({}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "another user",
    );
    let (_, list) = bob.get("/api/v1/jobs?limit=1000").await;
    assert!(!list.to_string().contains("ada-secret"), "{list}");
    let bobs_view = bob.sql("SELECT sql FROM sys.jobs").await.to_string();
    assert!(!bobs_view.contains("ada-secret"), "{bobs_view}");

    // The owner and admins can.
    let (status, _) = ada.get(&format!("/api/v1/jobs/{id}/results")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = admin.get(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let all = admin.sql("SELECT sql FROM sys.jobs").await.to_string();
    assert!(all.contains("ada-secret"), "{all}");
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_tokens_and_their_failures() {
    let (cluster, admin) = secured_cluster().await;
    admin.sql("CREATE USER ada PASSWORD 'right'").await;
    // Wrong password and unknown user read exactly alike.
    let mut anonymous = Api::new(cluster.http());
    let mut messages = Vec::new();
    for (user, password) in [("ada", "wrong"), ("nobody", "right")] {
        let (status, body) = anonymous
            .post("/api/v1/login", json!({"user": user, "password": password}))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        messages.push(body["message"].clone());
    }
    assert_eq!(messages[0], messages[1]);
    // Basic credentials work on any call, verified once.
    let basic = reqwest::Client::new()
        .post(format!("{}/api/v1/sql", cluster.http()))
        .basic_auth("ada", Some("right"))
        .json(&json!({"sql": "SELECT current_user_is_not_needed FROM (SELECT 1 AS current_user_is_not_needed)"}))
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status(), StatusCode::OK);

    // A personal access token: created, listed, used, revoked.
    let ada = login(&cluster, "ada", "right").await;
    let created = ada.sql("CREATE TOKEN ci EXPIRES IN '1 hour'").await;
    let token = created["rows"][0]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let id = created["rows"][0]["id"].as_str().expect("id").to_string();
    let listed = ada.sql("SHOW TOKENS").await.to_string();
    assert!(listed.contains(&id) && !listed.contains(&token), "{listed}");
    anonymous.token = Some(token.clone());
    assert_eq!(
        anonymous.sql("SELECT 1 AS one").await["rows"],
        json!([{"one": 1}])
    );
    ada.sql(&format!("DROP TOKEN '{id}'")).await;
    let (status, body) = try_sql(&anonymous, "SELECT 1").await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "token",
    );

    // Logging out ends the token (the one ada's logins share) and its session; logging in
    // again gives a new one.
    let leaving = login(&cluster, "ada", "right").await;
    leaving
        .sql("SET datafusion.execution.batch_size = 1024")
        .await;
    let (status, body) = leaving.post("/api/v1/logout", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = try_sql(&leaving, "SELECT 1").await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "token",
    );
    let again = login(&cluster, "ada", "right").await;
    assert_ne!(again.token, leaving.token);
    assert_eq!(
        again.sql("SELECT 1 AS one").await["rows"],
        json!([{"one": 1}])
    );

    // A dropped user's tokens stop working at once.
    admin.sql("DROP USER ada").await;
    let (status, _) = try_sql(&again, "SELECT 1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    cluster.cluster.shutdown().await;
}

/// A Flight client to `addr`, optionally sending one header.
async fn flight_client(addr: &str, header: Option<(&str, &str)>) -> arrow_flight::FlightClient {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let mut client = arrow_flight::FlightClient::new(channel);
    if let Some((key, value)) = header {
        client.add_header(key, value).expect("header");
    }
    client
}

/// The gRPC code of a refused call.
fn refused_code(result: Result<impl Sized, arrow_flight::error::FlightError>) -> tonic::Code {
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(arrow_flight::error::FlightError::Tonic(status)) => status.code(),
        Err(other) => panic!("not a gRPC refusal: {other}"),
    }
}

async fn flight_call(addr: &str, header: Option<(&str, &str)>) -> tonic::Code {
    let mut client = flight_client(addr, header).await;
    let action = arrow_flight::Action::new("anything", Vec::<u8>::new());
    let actions = client.do_action(action).await;
    let code = match actions {
        Ok(mut results) => {
            use futures::StreamExt;
            match results.next().await {
                Some(Err(e)) => refused_code(Err::<(), _>(e)),
                _ => tonic::Code::Ok,
            }
        }
        Err(e) => refused_code(Err::<(), _>(e)),
    };
    if code != tonic::Code::Unauthenticated {
        return code;
    }
    // Data reads are refused the same way.
    let mut client = flight_client(addr, header).await;
    let ticket = arrow_flight::Ticket::new("anything");
    let read = client.do_get(ticket).await;
    match read {
        Ok(mut stream) => {
            use futures::TryStreamExt;
            refused_code(stream.try_next().await)
        }
        Err(e) => refused_code(Err::<(), _>(e)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_refuses_callers_without_credentials() {
    let (cluster, admin) = secured_cluster().await;
    let basic_wrong = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "admin:wrong")
    );
    let listeners = cluster.cluster.listeners();
    assert!(listeners.len() >= 4, "{listeners:?}");
    for (kind, addr) in listeners {
        match kind {
            "flight_sql" => {
                for header in [
                    None,
                    Some(("authorization", basic_wrong.as_str())),
                    Some(("authorization", "Bearer forged")),
                ] {
                    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                        .expect("endpoint")
                        .connect()
                        .await
                        .expect("connects");
                    let mut client =
                        arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
                    if let Some((key, value)) = header {
                        client.set_header(key, value);
                    }
                    let outcome = client.execute("SELECT 1".to_string(), None).await;
                    assert_eq!(
                        refused_code(outcome),
                        tonic::Code::Unauthenticated,
                        "Flight SQL with {header:?}"
                    );
                }
            }
            "http" => {
                let http = reqwest::Client::new();
                for path in [
                    "/api/v1/sql",
                    "/api/v1/jobs",
                    "/api/v1/catalog",
                    "/api/v1/catalog/schemas",
                ] {
                    for header in [None, Some(basic_wrong.as_str()), Some("Bearer forged")] {
                        let mut request = if path == "/api/v1/sql" {
                            http.post(format!("http://{addr}{path}"))
                                .json(&json!({"sql": "SELECT 1"}))
                        } else {
                            http.get(format!("http://{addr}{path}"))
                        };
                        if let Some(value) = header {
                            request = request.header("authorization", value);
                        }
                        let status = request.send().await.expect("request").status();
                        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {header:?}");
                    }
                }
            }
            "internal" | "executor" => {
                for header in [None, Some(("x-quarry-cluster-secret", "wrong"))] {
                    assert_eq!(
                        flight_call(&addr, header).await,
                        tonic::Code::Unauthenticated,
                        "{kind} {addr} with {header:?}"
                    );
                }
            }
            "pgwire" => {
                let (host, port) = addr.rsplit_once(':').expect("host:port");
                for (user, password) in [
                    ("admin", None),
                    ("admin", Some("wrong")),
                    ("token", Some("forged")),
                ] {
                    let mut psql = std::process::Command::new("psql");
                    psql.args([
                        "-X", "-w", "-h", host, "-p", port, "-d", "quarry", "-U", user,
                    ])
                    .args(["-c", "SELECT 1"])
                    .env_remove("PGPASSWORD");
                    if let Some(password) = password {
                        psql.env("PGPASSWORD", password);
                    }
                    let out = psql.output().expect("psql runs");
                    let said = String::from_utf8_lossy(&out.stderr).to_string();
                    assert!(!out.status.success(), "pgwire as {user} with {password:?}");
                    assert!(
                        said.contains("password authentication failed")
                            || said.contains("no password supplied"),
                        "pgwire as {user} with {password:?}: {said}"
                    );
                }
            }
            other => panic!("no check for listener {other}: add one"),
        }
    }
    // A process that registers without the secret is not a member.
    let mut rogue =
        flight_client(&cluster.cluster.coordinator.internal_addr.to_string(), None).await;
    let registration = serde_json::to_vec(&json!({
        "executor_id": "rogue", "endpoint": "http://127.0.0.1:1", "slots": 64
    }))
    .expect("json");
    let registered = rogue
        .do_action(arrow_flight::Action::new("register", registration))
        .await;
    assert_eq!(refused_code(registered), tonic::Code::Unauthenticated);
    let nodes = admin.sql("SELECT executor_id FROM sys.nodes").await;
    assert_eq!(names(&nodes, "executor_id"), ["executor-1"]);
    // The cluster itself still works: its own calls carry the secret.
    let n = admin.sql("SELECT count(*) AS n FROM demo.orders").await;
    assert_eq!(n["rows"], json!([{"n": 1000}]));
    cluster.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_grants_and_tokens_over_rest() {
    let (cluster, admin) = secured_cluster().await;
    let (status, body) = admin
        .post("/api/v1/users", json!({"name": "ada", "password": "pw"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = admin
        .post("/api/v1/roles", json!({"name": "analyst"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = admin
        .post("/api/v1/roles/analyst/members", json!({"user": "ada"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let ada = login(&cluster, "ada", "pw").await;
    let (status, body) = try_sql(&ada, "SELECT count(*) AS n FROM demo.orders").await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "demo.orders",
    );
    let grant = json!({
        "privileges": ["select"],
        "on": {"type": "table", "name": "demo.orders"},
        "to": {"type": "role", "name": "analyst"},
    });
    let (status, body) = admin.post("/api/v1/grants", grant.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        ada.sql("SELECT count(*) AS n FROM demo.orders").await["rows"],
        json!([{"n": 1000}])
    );
    let (_, grants) = ada.get("/api/v1/grants").await;
    assert!(grants.to_string().contains("demo.orders"), "{grants}");
    // ada may not manage grants, users or roles.
    let (status, _) = ada.post("/api/v1/grants", grant.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = ada
        .post("/api/v1/users", json!({"name": "eve", "password": "x"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = admin
        .post(
            "/api/v1/grants",
            json!({"privileges": ["fly"], "on": {"type": "system"}, "to": {"type": "user", "name": "ada"}}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "fly",
    );
    let (status, _) = admin.post("/api/v1/grants/revoke", grant).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = try_sql(&ada, "SELECT count(*) FROM demo.orders").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Tokens: created (shown once), listed without the token, used, revoked.
    let (status, created) = ada
        .post(
            "/api/v1/tokens",
            json!({"name": "ci", "expiresIn": "1 hour"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().expect("token").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    let (_, listed) = ada.get("/api/v1/tokens").await;
    assert!(listed.to_string().contains(&id) && !listed.to_string().contains(&token));
    let mut by_token = Api::new(cluster.http());
    by_token.token = Some(token);
    assert_eq!(
        by_token.sql("SELECT 2 AS two").await["rows"],
        json!([{"two": 2}])
    );
    let (status, _) = ada.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = try_sql(&by_token, "SELECT 1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Users see themselves; admins everyone; dropping works through REST too.
    let (_, users) = ada.get("/api/v1/users").await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(1), "{users}");
    let (_, users) = admin.get("/api/v1/users").await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(2), "{users}");
    let (status, _) = admin.delete("/api/v1/roles/analyst/members/ada").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.delete("/api/v1/roles/analyst").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = admin.delete("/api/v1/users/ada").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    cluster.cluster.shutdown().await;
}

/// A Flight SQL client logged in as `user`.
async fn flight_sql_as(
    cluster: &TestCluster,
    user: &str,
    password: &str,
) -> arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(format!(
        "http://{}",
        cluster.cluster.coordinator.flight_addr
    ))
    .expect("endpoint")
    .connect()
    .await
    .expect("connects");
    let mut client = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    client.handshake(user, password).await.expect("login");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_results_and_cancels_belong_to_their_user() {
    use prost::Message;
    let (cluster, admin) = secured_cluster().await;
    admin.sql("CREATE USER ada PASSWORD 'a'").await;
    admin.sql("CREATE USER bob PASSWORD 'b'").await;
    let mut ada = flight_sql_as(&cluster, "ada", "a").await;
    let mut bob = flight_sql_as(&cluster, "bob", "b").await;
    let info = ada
        .execute("SELECT 'ada-only' AS marker".to_string(), None)
        .await
        .expect("ada's query");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    // bob holds ada's ticket (say it leaked): he can neither read nor cancel it.
    assert_eq!(
        refused_code(bob.do_get(ticket.clone()).await),
        tonic::Code::PermissionDenied
    );
    let cancel = arrow_flight::CancelFlightInfoRequest::new(info.clone());
    let cancelled = bob
        .do_action(arrow_flight::Action::new(
            "CancelFlightInfo",
            cancel.encode_to_vec(),
        ))
        .await;
    let code = match cancelled {
        Ok(mut results) => match results.message().await {
            Err(status) => status.code(),
            Ok(_) => tonic::Code::Ok,
        },
        Err(e) => refused_code(Err::<(), _>(e)),
    };
    assert_eq!(code, tonic::Code::PermissionDenied);
    // ada reads her results.
    let batches: Vec<arrow::array::RecordBatch> = {
        use futures::TryStreamExt;
        ada.do_get(ticket)
            .await
            .expect("ada's results")
            .try_collect()
            .await
            .expect("batches")
    };
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    cluster.cluster.shutdown().await;
}

/// Writes need their privileges: CREATE TABLE on the schema to create, INSERT on the
/// table to add rows, ALTER to delete or overwrite them, SELECT on what a CTAS reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_their_privileges() {
    let (cluster, admin) = secured_cluster().await;
    admin.sql("CREATE USER ada PASSWORD 'ada-pw'").await;
    admin.sql("CREATE SCHEMA sandbox").await;
    admin
        .sql("CREATE TABLE sandbox.shared (id INT, note VARCHAR)")
        .await;
    admin
        .sql("INSERT INTO sandbox.shared VALUES (1, 'admin')")
        .await;
    let ada = login(&cluster, "ada", "ada-pw").await;
    let denied = |status: StatusCode, body: &Value, what: &str| {
        assert_error(
            status,
            body,
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            what,
        )
    };

    let (status, body) = try_sql(&ada, "CREATE TABLE sandbox.mine (id INT)").await;
    denied(status, &body, "sandbox");
    let (status, body) = try_sql(&ada, "INSERT INTO sandbox.shared VALUES (2, 'ada')").await;
    denied(status, &body, "sandbox.shared");

    admin
        .sql("GRANT CREATE TABLE ON SCHEMA sandbox TO USER ada")
        .await;
    // Creating is allowed now, but a CTAS still needs SELECT on what it reads.
    let (status, body) = try_sql(
        &ada,
        "CREATE TABLE sandbox.copy AS SELECT * FROM demo.orders",
    )
    .await;
    denied(status, &body, "demo.orders");
    let (status, body) = try_sql(&ada, "SELECT * FROM sandbox.copy").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused CTAS left a table: {body}"
    );
    let created = ada.sql("CREATE TABLE sandbox.mine AS SELECT 1 AS id").await;
    assert_eq!(created["rows"][0]["count"], 1, "{created}");
    // The creator holds ALL on it: insert and delete.
    ada.sql("INSERT INTO sandbox.mine VALUES (2)").await;
    let deleted = ada.sql("DELETE FROM sandbox.mine WHERE id = 1").await;
    assert_eq!(deleted["rows"][0]["count"], 1, "{deleted}");

    // INSERT alone is enough to insert; the table stays unreadable to ada.
    admin
        .sql("GRANT INSERT ON TABLE sandbox.shared TO USER ada")
        .await;
    let inserted = ada
        .sql("INSERT INTO sandbox.shared VALUES (2, 'ada')")
        .await;
    assert_eq!(inserted["rows"][0]["count"], 1, "{inserted}");
    let (status, _) = try_sql(&ada, "SELECT * FROM sandbox.shared").await;
    assert_ne!(status, StatusCode::OK, "INSERT does not grant reading");
    // DELETE reads the rows it removes (as in Trino): it needs SELECT, and ALTER.
    admin
        .sql("GRANT SELECT ON TABLE sandbox.shared TO USER ada")
        .await;
    let (status, body) = try_sql(&ada, "DELETE FROM sandbox.shared WHERE id = 1").await;
    denied(status, &body, "sandbox.shared");
    let (status, body) = try_sql(&ada, "INSERT OVERWRITE sandbox.shared SELECT 3, 'x'").await;
    denied(status, &body, "sandbox.shared");
    let rows = admin.sql("SELECT count(*) AS n FROM sandbox.shared").await;
    assert_eq!(rows["rows"][0]["n"], 2, "{rows}");
}

/// Reflections follow their dataset's grants: defining or refreshing one needs ALTER on
/// it, seeing one in sys.reflections needs SELECT, and a user who may not read the
/// dataset cannot read it through a reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflections_follow_their_datasets_grants() {
    let (cluster, admin) = secured_cluster().await;
    admin.sql("CREATE USER ada PASSWORD 'ada-pw'").await;
    admin
        .sql(
            "ALTER TABLE demo.orders CREATE AGGREGATE REFLECTION by_city \
             USING DIMENSIONS (city) MEASURES (revenue (SUM))",
        )
        .await;
    admin.sql("WAIT FOR REFLECTION by_city TIMEOUT 60").await;
    let ada = login(&cluster, "ada", "ada-pw").await;
    let listed = ada.sql("SELECT name FROM sys.reflections").await;
    assert!(names(&listed, "name").is_empty(), "{listed}");
    let query = "SELECT city, sum(revenue) FROM demo.orders GROUP BY city";
    let (status, body) = try_sql(&ada, query).await;
    assert_ne!(status, StatusCode::OK, "read through a reflection: {body}");
    let denied = |status: StatusCode, body: &Value, what: &str| {
        assert_error(
            status,
            body,
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            what,
        )
    };
    admin
        .sql("GRANT SELECT ON TABLE demo.orders TO USER ada")
        .await;
    let listed = ada.sql("SELECT name FROM sys.reflections").await;
    assert_eq!(names(&listed, "name"), ["by_city"], "{listed}");
    let answered = ada.sql(query).await;
    assert!(
        answered["reflections"][0]
            .as_str()
            .is_some_and(|r| r.starts_with("by_city: chosen")),
        "{answered}"
    );
    let (status, body) = try_sql(
        &ada,
        "ALTER TABLE demo.orders CREATE RAW REFLECTION mine USING DISPLAY (city)",
    )
    .await;
    denied(status, &body, "demo.orders");
    let (status, body) = try_sql(&ada, "ALTER TABLE demo.orders REFRESH REFLECTIONS").await;
    denied(status, &body, "demo.orders");
    let (status, body) = try_sql(&ada, "DROP REFLECTION by_city").await;
    denied(status, &body, "demo.orders");
}

/// Whether a REST job answer says its rows came from the results cache.
async fn served_from_cache(api: &Api, body: &Value) -> bool {
    let id = body["id"].as_str().expect("job id");
    let (_, job) = api.get(&format!("/api/v1/jobs/{id}")).await;
    job["resultsCache"]
        .as_str()
        .is_some_and(|note| note.starts_with("served from the results cache"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_results_are_never_shared_between_users_and_a_revoke_stops_them() {
    let (cluster, admin) = secured_cluster().await;
    admin.sql("CREATE USER ada PASSWORD 'a'").await;
    admin.sql("CREATE USER bob PASSWORD 'b'").await;
    admin
        .sql("GRANT SELECT ON TABLE demo.orders TO USER ada")
        .await;
    admin
        .sql("GRANT SELECT ON TABLE demo.orders TO USER bob")
        .await;
    let (ada, bob) = (
        login(&cluster, "ada", "a").await,
        login(&cluster, "bob", "b").await,
    );
    let query = "SELECT city, count(*) AS n FROM demo.orders GROUP BY city ORDER BY city";
    let first = ada.sql(query).await;
    assert!(!served_from_cache(&ada, &first).await);
    let again = ada.sql(query).await;
    assert!(served_from_cache(&ada, &again).await, "{again}");
    assert_eq!(first["rows"], again["rows"]);
    // The third is served without planning: the REVOKE below must stop that too.
    let third = ada.sql(query).await;
    let id = third["id"].as_str().expect("job id");
    let (_, job) = ada.get(&format!("/api/v1/jobs/{id}")).await;
    assert!(
        job["resultsCache"]
            .as_str()
            .is_some_and(|note| note.starts_with("served from the results cache without planning")),
        "{job}"
    );

    // The same query, the same rows, another user: run for bob, not served from ada's.
    let bobs = bob.sql(query).await;
    assert!(!served_from_cache(&bob, &bobs).await);
    assert_eq!(bobs["rows"], first["rows"]);

    // After a REVOKE ada's repeat is refused, not answered from what she read before.
    admin
        .sql("REVOKE SELECT ON TABLE demo.orders FROM USER ada")
        .await;
    let (status, body) = try_sql(&ada, query).await;
    assert_error(
        status,
        &body,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "demo.orders",
    );
}
