//! The whole path: pack, open, install, rollback, and each refusal.

use super::*;
use ed25519_dalek::SigningKey;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

const NOW: i64 = 1_750_000_000;
const DAY: i64 = 86_400;
const BOSUN: &str = "0.1.0";

fn source(dir: &Path, version: &str, script: &str) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(
        dir.join("module.toml"),
        format!(
            "name = \"my-agent\"\nversion = \"{version}\"\nmin_bosun = \"0.1.0\"\n[provider]\nkind = \"acp\"\ncommand = \"bin/agent\"\nargs = [\"--acp\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("bin/agent"), script).unwrap();
    std::fs::set_permissions(dir.join("bin/agent"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("README"), "docs").unwrap();
}

fn module(key: &SigningKey, version: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    source(dir.path(), version, "#!/bin/sh\necho hi\n");
    pack(dir.path(), key, NOW, 30 * DAY).unwrap()
}

fn trust(keys: &[&SigningKey]) -> Trust {
    let entries: Vec<TrustedKey> = keys
        .iter()
        .map(|k| TrustedKey { id: key_id(&k.verifying_key()), public_key: encode_public(&k.verifying_key()) })
        .collect();
    Trust::new(&entries).unwrap()
}

/// Each entry of a tar, to rebuild it with one changed.
fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Read as _;
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (path, data)
        })
        .collect()
}

fn rebuild(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Every path under `dir` with its contents or link target: what "nothing
/// changed" compares.
fn tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.map(Result::unwrap) {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                out.push((rel, format!("-> {}", std::fs::read_link(&path).unwrap().display())));
            } else if meta.is_dir() {
                out.push((rel, "dir".into()));
                walk(root, &path, out);
            } else {
                out.push((rel, String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_packed_module_verifies_installs_and_rolls_back() {
    let key = generate().unwrap();
    let bytes = module(&key, "1.0.0");
    assert_eq!(bytes, module(&key, "1.0.0"), "packing is reproducible");
    let verified = open(&bytes, &trust(&[&key]), NOW + DAY, BOSUN).unwrap();
    assert_eq!(verified.manifest.name, "my-agent");
    assert_eq!(verified.manifest.expires_at, NOW + 30 * DAY);
    let paths: Vec<&str> = verified.manifest.artifacts.iter().map(|a| a.path.as_str()).collect();
    assert_eq!(paths, ["README", "bin/agent"], "module.toml is not an artifact");
    assert!(verified.manifest.artifacts[1].executable && !verified.manifest.artifacts[0].executable);

    let data = tempfile::tempdir().unwrap();
    let layout = Layout::new(data.path());
    let switched = layout.install(&verified, false).unwrap();
    assert_eq!((switched.version.as_str(), switched.replaced), ("1.0.0", None));
    let installed = layout.installed("my-agent").unwrap().unwrap();
    let command = installed.command();
    assert!(command.ends_with("providers/my-agent/1.0.0/files/bin/agent"), "{command}");
    let mode = std::fs::metadata(&command).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(std::fs::read_to_string(&command).unwrap(), "#!/bin/sh\necho hi\n");
    let backup = data.path().join("providers/my-agent/backup");
    assert_eq!(std::fs::read_to_string(backup.join("1.0.0.manifest.json")).unwrap(), verified.manifest_json);
    assert!(backup.join("1.0.0.manifest.sig").is_file());
    assert!(matches!(layout.rollback("my-agent"), Err(ModuleError::NoPrevious(_))));

    // Installing the same module again changes nothing but is no error.
    layout.install(&verified, false).unwrap();
    assert_eq!(layout.installed("my-agent").unwrap().unwrap().previous, None);

    let v2 = open(&module(&key, "1.1.0"), &trust(&[&key]), NOW, BOSUN).unwrap();
    let switched = layout.install(&v2, false).unwrap();
    assert_eq!(switched.replaced.as_deref(), Some("1.0.0"));
    let installed = layout.installed("my-agent").unwrap().unwrap();
    assert_eq!((installed.manifest.version.as_str(), installed.previous.as_deref()), ("1.1.0", Some("1.0.0")));
    assert_eq!(installed.versions, ["1.0.0", "1.1.0"]);

    let back = layout.rollback("my-agent").unwrap();
    assert_eq!((back.version.as_str(), back.replaced.as_deref()), ("1.0.0", Some("1.1.0")));
    let installed = layout.installed("my-agent").unwrap().unwrap();
    assert_eq!((installed.manifest.version.as_str(), installed.previous.as_deref()), ("1.0.0", Some("1.1.0")));
    assert_eq!(layout.list().unwrap().len(), 1);
    assert!(matches!(layout.rollback("other"), Err(ModuleError::NotInstalled(_))));
    // No staging dir or temporary link is left behind.
    assert!(tree(data.path()).iter().all(|(p, _)| !p.contains("/.")), "{:?}", tree(data.path()));
}

#[test]
fn each_refusal_has_its_code_and_changes_nothing() {
    let key = generate().unwrap();
    let other = generate().unwrap();
    let trusted = trust(&[&key]);
    let data = tempfile::tempdir().unwrap();
    let layout = Layout::new(data.path());
    layout.install(&open(&module(&key, "1.0.0"), &trusted, NOW, BOSUN).unwrap(), false).unwrap();
    let before = tree(data.path());
    let good = module(&key, "2.0.0");

    let refuse = |bytes: &[u8], now: i64, code: &str| {
        let err = match open(bytes, &trusted, now, BOSUN) {
            Ok(verified) => layout.install(&verified, false).unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(err.code(), code, "{err}");
        assert_eq!(tree(data.path()), before, "a refused module ({code}) changed the data dir");
        err
    };

    // A changed artifact.
    let mut tampered = entries(&good);
    let agent = tampered.iter_mut().find(|(p, _)| p == "files/bin/agent").unwrap();
    agent.1 = b"#!/bin/sh\nrm -rf ~\n".to_vec();
    let err = refuse(&rebuild(&tampered), NOW, "hash_mismatch");
    assert!(err.to_string().contains("bin/agent"), "{err}");
    // Same length, other bytes.
    let mut same_size = entries(&good);
    let agent = same_size.iter_mut().find(|(p, _)| p == "files/bin/agent").unwrap();
    agent.1 = b"#!/bin/sh\necho ho\n".to_vec();
    assert!(refuse(&rebuild(&same_size), NOW, "hash_mismatch").to_string().contains("sha256"));
    // A changed manifest under the old signature.
    let mut edited = entries(&good);
    let manifest = edited.iter_mut().find(|(p, _)| p == MANIFEST_FILE).unwrap();
    manifest.1 = String::from_utf8(manifest.1.clone()).unwrap().replace("--acp", "--yolo").into_bytes();
    refuse(&rebuild(&edited), NOW, "bad_signature");
    // A signature by another key that claims to be the trusted one.
    let mut forged = entries(&module(&other, "2.0.0"));
    let manifest = forged.iter_mut().find(|(p, _)| p == MANIFEST_FILE).unwrap();
    manifest.1 = String::from_utf8(manifest.1.clone())
        .unwrap()
        .replace(&key_id(&other.verifying_key()), &key_id(&key.verifying_key()))
        .into_bytes();
    refuse(&rebuild(&forged), NOW, "bad_signature");
    // Garbage for a signature.
    let mut garbled = entries(&good);
    garbled.iter_mut().find(|(p, _)| p == SIGNATURE_FILE).unwrap().1 = b"AAAA".to_vec();
    refuse(&rebuild(&garbled), NOW, "bad_signature");
    // No signature at all.
    let unsigned: Vec<_> = entries(&good).into_iter().filter(|(p, _)| p != SIGNATURE_FILE).collect();
    refuse(&rebuild(&unsigned), NOW, "bad_module");
    // Signed by a key not trusted.
    let err = refuse(&module(&other, "2.0.0"), NOW, "unknown_key");
    assert!(err.to_string().contains(&key_id(&other.verifying_key())), "{err}");
    // Expired.
    refuse(&good, NOW + 31 * DAY, "expired");
    // Too new for this bosun.
    let dir = tempfile::tempdir().unwrap();
    source(dir.path(), "2.0.0", "x");
    let spec = std::fs::read_to_string(dir.path().join("module.toml")).unwrap();
    std::fs::write(dir.path().join("module.toml"), spec.replace("min_bosun = \"0.1.0\"", "min_bosun = \"9.0.0\""))
        .unwrap();
    refuse(&pack(dir.path(), &key, NOW, DAY).unwrap(), NOW, "incompatible");
    // A downgrade, allowed only when asked.
    let old = open(&module(&key, "0.9.0"), &trusted, NOW, BOSUN).unwrap();
    refuse(&module(&key, "0.9.0"), NOW, "downgrade");
    assert_eq!(layout.install(&old, true).unwrap().version, "0.9.0");
}

#[test]
fn unsafe_archives_are_refused() {
    let key = generate().unwrap();
    let trusted = trust(&[&key]);
    let good = entries(&module(&key, "1.0.0"));

    // `tar::Builder` refuses `..` itself; a hostile archive is written by hand.
    let raw_entry = |name: &str, kind: tar::EntryType, link: Option<&str>| {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(0);
        header.set_mode(0o644);
        header.set_entry_type(kind);
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        let mut bytes = Vec::new();
        for (path, data) in &good {
            let mut h = tar::Header::new_ustar();
            h.set_path(path).unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend_from_slice(data);
            bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        }
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 1024]);
        bytes
    };
    for name in ["files/../../evil", "/etc/cron.d/evil", "files/a/../../x"] {
        let err = open(&raw_entry(name, tar::EntryType::Regular, None), &trusted, NOW, BOSUN).unwrap_err();
        assert_eq!(err.code(), "unsafe_path", "{name}: {err}");
    }
    let err =
        open(&raw_entry("files/link", tar::EntryType::Symlink, Some("/etc/passwd")), &trusted, NOW, BOSUN).unwrap_err();
    assert_eq!(err.code(), "unsafe_path", "{err}");
    let err =
        open(&raw_entry("files/hard", tar::EntryType::Link, Some("/etc/passwd")), &trusted, NOW, BOSUN).unwrap_err();
    assert_eq!(err.code(), "unsafe_path", "{err}");

    // A file the manifest does not list, and one outside files/.
    let mut extra = good.clone();
    extra.push(("files/bin/extra".into(), b"x".to_vec()));
    assert_eq!(open(&rebuild(&extra), &trusted, NOW, BOSUN).unwrap_err().code(), "bad_module");
    let mut stray = good.clone();
    stray.push(("hooks/post-install".into(), b"x".to_vec()));
    assert_eq!(open(&rebuild(&stray), &trusted, NOW, BOSUN).unwrap_err().code(), "bad_module");
    let missing: Vec<_> = good.iter().filter(|(p, _)| p != "files/README").cloned().collect();
    assert_eq!(open(&rebuild(&missing), &trusted, NOW, BOSUN).unwrap_err().code(), "hash_mismatch");
    assert_eq!(open(b"not a tar at all", &trusted, NOW, BOSUN).unwrap_err().code(), "bad_module");

    // Packing refuses a symlink in the source directory.
    let dir = tempfile::tempdir().unwrap();
    source(dir.path(), "1.0.0", "x");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("bin/passwd")).unwrap();
    assert_eq!(pack(dir.path(), &key, NOW, DAY).unwrap_err().code(), "unsafe_path");
}

#[test]
fn keys_rotate_by_trusting_both_then_dropping_the_old() {
    let old = generate().unwrap();
    let new = generate().unwrap();
    let both = trust(&[&old, &new]);
    assert!(open(&module(&old, "1.0.0"), &both, NOW, BOSUN).is_ok());
    assert!(open(&module(&new, "1.1.0"), &both, NOW, BOSUN).is_ok());
    let only_new = trust(&[&new]);
    assert_eq!(open(&module(&old, "1.0.0"), &only_new, NOW, BOSUN).unwrap_err().code(), "unknown_key");
    assert!(open(&module(&new, "1.1.0"), &only_new, NOW, BOSUN).is_ok());
}

#[test]
fn another_module_under_an_installed_version_is_refused() {
    let key = generate().unwrap();
    let trusted = trust(&[&key]);
    let data = tempfile::tempdir().unwrap();
    let layout = Layout::new(data.path());
    layout.install(&open(&module(&key, "1.0.0"), &trusted, NOW, BOSUN).unwrap(), false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    source(dir.path(), "1.0.0", "#!/bin/sh\necho changed\n");
    let changed = open(&pack(dir.path(), &key, NOW, DAY).unwrap(), &trusted, NOW, BOSUN).unwrap();
    assert_eq!(layout.install(&changed, false).unwrap_err().code(), "version_conflict");
}
