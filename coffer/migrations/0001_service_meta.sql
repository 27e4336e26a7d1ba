-- Facts about this installation that every service may read (demo credentials, versions).
CREATE TABLE service_meta (
    key text PRIMARY KEY,
    value text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
