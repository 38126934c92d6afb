//! SimFs directories: renames and removals of whole directories survive a crash only once the
//! parent directory is synced, as on a real file system; files move with their directory.

use std::path::Path;
use storage::sim::{CrashMode, SimFs};
use storage::{Fs, OpenMode};

fn file(fs: &SimFs, path: &str, data: &[u8]) {
    let f = fs.open(Path::new(path), OpenMode::Truncate).unwrap();
    f.write_all_at(data, 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(Path::new(path).parent().unwrap()).unwrap();
}

#[test]
fn a_directory_rename_is_durable_only_after_its_parent_is_synced() {
    for synced in [false, true] {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d/t-0")).unwrap();
        file(&fs, "/d/t-0/00.log", b"records");
        fs.rename_dir(Path::new("/d/t-0"), Path::new("/d/t-0.x-delete"))
            .unwrap();
        assert!(!fs.exists(Path::new("/d/t-0")) && fs.exists(Path::new("/d/t-0.x-delete/00.log")));
        assert_eq!(fs.list_dirs(Path::new("/d")).unwrap(), ["t-0.x-delete"]);
        if synced {
            fs.sync_dir(Path::new("/d")).unwrap();
        }
        fs.crash(CrashMode::DropUnsynced);
        let (gone, here) = if synced {
            ("/d/t-0", "/d/t-0.x-delete")
        } else {
            ("/d/t-0.x-delete", "/d/t-0")
        };
        assert!(!fs.exists(Path::new(gone)), "synced={synced}");
        assert_eq!(
            fs.read_all(&Path::new(here).join("00.log")).unwrap(),
            b"records",
            "synced={synced}"
        );
    }
}

#[test]
fn a_directory_removal_is_durable_only_after_its_parent_is_synced() {
    for synced in [false, true] {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d/t-0")).unwrap();
        file(&fs, "/d/t-0/00.log", b"records");
        fs.remove_dir_all(Path::new("/d/t-0")).unwrap();
        assert!(!fs.exists(Path::new("/d/t-0/00.log")));
        if synced {
            fs.sync_dir(Path::new("/d")).unwrap();
        }
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(fs.exists(Path::new("/d/t-0/00.log")), !synced);
    }
}
