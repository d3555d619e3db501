//! Self-tests of the auth material: agent, user certificates, host certificates, RSA keys.

use crate::harness::{
    KeyKind, OpenSshClient, SshAgent, SshServer, TestCa, UserKey, current_user, with_timeout,
};

use super::{TEST_LIMIT, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_agent_with_encrypted_key_logs_in() {
    with_timeout(TEST_LIMIT, async {
        let server = SshServer::start().await?;
        let key = UserKey::generate(KeyKind::Ecdsa, Some("correct horse")).await?;
        server.authorize(&key)?;
        let agent = SshAgent::start().await?;
        assert!(agent.identities().await?.is_empty());
        agent.add(&key).await?;
        let held = agent.identities().await?;
        assert_eq!(held.len(), 1);
        assert!(
            key.public_key()
                .starts_with(&held[0][..held[0].rfind(' ').unwrap_or(0)])
        );

        let client = OpenSshClient::new(&server)?.agent(agent.socket());
        let mut cmd = client.command(&[]);
        cmd.arg("printf agent-ok");
        assert_eq!(run(cmd).await?, (0, "agent-ok".to_owned()));

        agent.remove_all().await?;
        let mut cmd = client.command(&[]);
        cmd.arg("true");
        assert_eq!(run(cmd).await?.0, 255, "login without keys in the agent");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_ca_signed_user_certificate_logs_in() {
    with_timeout(TEST_LIMIT, async {
        let server = SshServer::start().await?;
        let ca = TestCa::generate().await?;
        let key = UserKey::generate(KeyKind::Ed25519, None).await?;
        let client = OpenSshClient::new(&server)?.identity(key.path());
        let mut cmd = client.command(&[]);
        cmd.arg("true");
        assert_eq!(run(cmd).await?.0, 255, "unsigned, unauthorized key got in");

        server.trust_user_ca(&ca).await?;
        let cert = ca.sign_user(&key, &[&current_user()?]).await?;
        assert_eq!(cert, key.cert_path());
        let mut cmd = client.command(&[]);
        cmd.arg("printf cert-ok");
        assert_eq!(run(cmd).await?, (0, "cert-ok".to_owned()));
        assert!(
            server.log_contains("ED25519-CERT"),
            "sshd did not log a cert login"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_host_certificate_and_rsa_user_key() {
    with_timeout(TEST_LIMIT, async {
        let server = SshServer::start().await?;
        let ca = TestCa::generate().await?;
        server.use_host_certificates(&ca).await?;
        let key = UserKey::generate(KeyKind::Rsa, None).await?;
        server.authorize(&key)?;

        let known_hosts = server.dir().join("known_hosts_ca");
        std::fs::write(
            &known_hosts,
            ca.known_hosts_line(&server.host_pattern("127.0.0.1")),
        )?;
        let client = OpenSshClient::new(&server)?
            .identity(key.path())
            .known_hosts(&known_hosts);
        let mut cmd = client.command(&[]);
        cmd.arg("printf host-cert-ok");
        assert_eq!(run(cmd).await?, (0, "host-cert-ok".to_owned()));
        assert!(
            server.log_contains("pkalg rsa-sha2-512"),
            "no rsa-sha2-512 in the log"
        );

        // A known_hosts file trusting another CA must be refused.
        let other = TestCa::generate().await?;
        std::fs::write(&known_hosts, other.known_hosts_line("*"))?;
        let mut cmd = client.command(&[]);
        cmd.arg("true");
        assert_eq!(
            run(cmd).await?.0,
            255,
            "host cert from an untrusted CA accepted"
        );
        Ok(())
    })
    .await
}
