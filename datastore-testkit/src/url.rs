//! URL handling both kinds of server need.

/// `scheme://` length and authority (`[userinfo@]hosts`) of `uri`.
pub(crate) fn authority(uri: &str) -> Option<(usize, &str)> {
    let after = uri.find("://")? + 3;
    let len = uri[after..]
        .find(['/', '?', '#'])
        .unwrap_or(uri.len() - after);
    Some((after, &uri[after..after + len]))
}

/// Returns `uri` with the password (if any) replaced by `***`.
pub(crate) fn mask_password(uri: &str) -> String {
    let Some((start, authority)) = authority(uri) else {
        return uri.to_string();
    };
    let Some((userinfo, hosts)) = authority.rsplit_once('@') else {
        return uri.to_string();
    };
    let Some((user, _)) = userinfo.split_once(':') else {
        return uri.to_string();
    };
    format!(
        "{}{user}:***@{hosts}{}",
        &uri[..start],
        &uri[start + authority.len()..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password() {
        assert_eq!(
            mask_password("mongodb://app:s3cr3t@h1:27017,h2:27017/admin?replicaSet=rs0"),
            "mongodb://app:***@h1:27017,h2:27017/admin?replicaSet=rs0"
        );
        // Password containing '@' and ':' (not percent-encoded).
        assert_eq!(
            mask_password("mongodb+srv://u:p@ss:w@rd@cluster.example.net/db"),
            "mongodb+srv://u:***@cluster.example.net/db"
        );
        assert_eq!(mask_password("mongodb://u@h/db"), "mongodb://u@h/db");
        assert_eq!(mask_password("mongodb://h:1/"), "mongodb://h:1/");
        assert_eq!(mask_password("not a uri"), "not a uri");
    }

    #[test]
    fn masks_postgres_password() {
        assert_eq!(
            mask_password("postgres://user:s3cr3t@db.example:5432/postgres?sslmode=require"),
            "postgres://user:***@db.example:5432/postgres?sslmode=require"
        );
        // Password containing '@' and ':'.
        assert_eq!(
            mask_password("postgresql://u:p@ss:w@rd@host/db"),
            "postgresql://u:***@host/db"
        );
        assert_eq!(
            mask_password("postgres://user@host:5432/db"),
            "postgres://user@host:5432/db"
        );
        assert_eq!(mask_password("not a url"), "not a url");
        assert_eq!(mask_password("postgres://host"), "postgres://host");
    }
}
