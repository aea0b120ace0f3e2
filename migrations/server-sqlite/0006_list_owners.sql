-- Least data (issue 8): a list belongs to a user (their session, their caseload) or to a team
-- (a team's caseload), or, with neither, to the whole service. Which lists reach a user is
-- decided in server/src/lists.rs from these columns and the agreements' `lists` scope.
-- (As server-postgres/0004_list_owners.sql.)

ALTER TABLE lists ADD COLUMN owner_user_id TEXT REFERENCES users (id);
ALTER TABLE lists ADD COLUMN team TEXT;

-- A user's team within their service (at most one).
CREATE TABLE team_members (
    user_id TEXT PRIMARY KEY REFERENCES users (id),
    team TEXT NOT NULL
);
CREATE INDEX team_members_by_team ON team_members (team);
