use super::*;

#[tokio::test]
async fn passwords_and_tokens() -> Result<(), QuarryError> {
    let dir = tempfile::tempdir().map_err(|e| QuarryError::io("temp dir", &e))?;
    let catalog = Catalog::open(dir.path()).map_err(catalog_error)?;
    let control = AccessControl::new(true, catalog)?;
    let auth = Auth::new(Arc::clone(&control));
    auth.bootstrap_admin("s3cret")?;
    for (user, password) in [("admin", "nope"), ("bob", "s3cret")] {
        let error = auth.login(user, password).await.expect_err("refused");
        assert_eq!(error.code, ErrorCode::Unauthenticated);
        assert_eq!(error.message, LOGIN_FAILED);
    }
    // Failed logins write nothing.
    let tokens = auth.catalog().list_tokens().map_err(catalog_error)?;
    assert!(tokens.is_empty(), "{tokens:?}");
    let token = auth.login("admin", "s3cret").await?;
    // The same credential again is answered from the cache, with the same token.
    assert_eq!(auth.login("admin", "s3cret").await?, token);
    assert_eq!(auth.verify(&token).await?, "admin");
    assert!(auth.verify("forged").await.is_err());
    auth.logout(&token).await?;
    assert!(auth.verify(&token).await.is_err());

    let (pat, listed) = auth
        .create_personal_token("admin", "ci", Duration::from_secs(60))
        .await?;
    assert_eq!(auth.verify(&pat).await?, "admin");
    assert_eq!(auth.personal_tokens(None).await?.len(), 1);
    assert!(
        auth.revoke_personal_token(&listed.id, "mallory", false)
            .await
            .is_err()
    );
    auth.revoke_personal_token(&listed.id, "admin", false)
        .await?;
    assert!(auth.verify(&pat).await.is_err());
    let (short, _) = auth
        .create_personal_token("admin", "short", Duration::ZERO)
        .await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(auth.verify(&short).await.is_err(), "expired token accepted");

    // A verified credential is remembered; then a flood of wrong passwords stops being
    // checked at all, while the remembered credential still works.
    let remembered = auth.login("admin", "s3cret").await?;
    for _ in 0..MAX_FAILED_LOGINS {
        assert!(auth.login("admin", "guess").await.is_err());
    }
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        let error = auth.login("admin", "guess").await.expect_err("refused");
        assert_eq!(error.message, LOGIN_FAILED);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "1000 refused logins took {:?}",
        started.elapsed()
    );
    assert_eq!(auth.login("admin", "s3cret").await?, remembered);
    Ok(())
}

#[test]
fn credentials_parse_one_way_for_every_frontend() -> Result<(), QuarryError> {
    let padded = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ada:pw")
    );
    let unpadded = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode("ada:pw")
    );
    let expected = Credentials::Basic {
        user: "ada".to_string(),
        password: "pw".to_string(),
    };
    assert_eq!(Credentials::parse(Some(&padded))?, expected);
    assert_eq!(Credentials::parse(Some(&unpadded))?, expected);
    assert_eq!(
        Credentials::parse(Some("bearer abc"))?,
        Credentials::Bearer("abc".to_string())
    );
    assert_eq!(Credentials::parse(None)?, Credentials::None);
    assert!(Credentials::parse(Some("Basic !!!")).is_err());
    assert!(Credentials::parse(Some("Digest x")).is_err());
    Ok(())
}
