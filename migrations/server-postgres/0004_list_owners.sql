-- Least data (issue 8): a list belongs to a user (their session, their caseload) or to a team
-- (a team's caseload), or, with neither, to the whole service. Which lists reach a user is
-- decided in server/src/lists.rs from these columns and the agreements' `lists` scope.
-- (As server-sqlite/0006_list_owners.sql.)

ALTER TABLE lists ADD COLUMN owner_user_id text REFERENCES users (id);
ALTER TABLE lists ADD COLUMN team text;

-- A user's team within their service (at most one).
CREATE TABLE team_members (
    user_id text PRIMARY KEY REFERENCES users (id),
    team text NOT NULL
);
CREATE INDEX team_members_by_team ON team_members (team);
