-- A state.db made by aishell before its schema history moved to Alembic (meta
-- schema_version 6, no alembic_version table): two runs with their steps, events,
-- approvals and statements, two backups, two schedules, a cached plan, a scratch entry,
-- a target lock and an open breaker, dumped with `sqlite3 state.db .dump`.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO meta VALUES('schema_version','6');
CREATE TABLE runs (
	run_id VARCHAR(32) NOT NULL, 
	agent VARCHAR(64) NOT NULL, 
	target VARCHAR(128) NOT NULL, 
	dialect VARCHAR(32) NOT NULL, 
	job TEXT NOT NULL, 
	"plan" TEXT NOT NULL, 
	plan_hash VARCHAR(64) NOT NULL, 
	tool_fingerprints TEXT NOT NULL, 
	dry_run BOOLEAN NOT NULL, 
	safety_level VARCHAR(16) NOT NULL, 
	status VARCHAR(32) NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	finished_at VARCHAR(32), 
	error TEXT, 
	pid INTEGER, 
	hostname VARCHAR(255), 
	started_by VARCHAR(128), 
	PRIMARY KEY (run_id)
);
INSERT INTO runs VALUES('fixturerun01','maintenance','demo','sqlite','{"type": "full"}','{"steps": ["analyze_table", "vacuum_table"]}','abababababababababababababababababababababababababababababababab','{"analyze_table": "f1", "vacuum_table": "f2"}',0,'strict','completed','2026-11-23T15:46:32.048+00:00','2026-11-23T15:46:32.101+00:00',NULL,1169,'vm','root');
INSERT INTO runs VALUES('fixturerun02','maintenance','demo','sqlite','{"type": "quick"}','{"steps": ["analyze_table", "vacuum_table"]}','abababababababababababababababababababababababababababababababab','{"analyze_table": "f1", "vacuum_table": "f2"}',0,'strict','denied','2026-11-23T15:46:32.104+00:00','2026-11-23T15:46:32.128+00:00',NULL,1169,'vm','root');
CREATE TABLE steps (
	run_id VARCHAR(32) NOT NULL, 
	idx INTEGER NOT NULL, 
	step_id VARCHAR(64) NOT NULL, 
	tool VARCHAR(128) NOT NULL, 
	subject VARCHAR(255), 
	risk_level VARCHAR(16) NOT NULL, 
	params TEXT NOT NULL, 
	resolved_params TEXT, 
	sql TEXT, 
	status VARCHAR(32) NOT NULL, 
	attempts INTEGER NOT NULL, 
	output TEXT, 
	error TEXT, 
	started_at VARCHAR(32), 
	finished_at VARCHAR(32), 
	PRIMARY KEY (run_id, idx)
);
INSERT INTO steps VALUES('fixturerun01',0,'step_0','analyze_table','users','low','{"table": "users"}','{"table": "users"}','["ANALYZE users"]','succeeded',1,'{"analyzed": true}',NULL,'2026-11-23T15:46:32.060+00:00','2026-11-23T15:46:32.073+00:00');
INSERT INTO steps VALUES('fixturerun01',1,'step_1','vacuum_table','users','high','{"table": "users"}','{"table": "users"}','["VACUUM"]','succeeded',1,'{"freed": 4096}',NULL,'2026-11-23T15:46:32.088+00:00','2026-11-23T15:46:32.092+00:00');
INSERT INTO steps VALUES('fixturerun02',0,'step_0','analyze_table','users','low','{"table": "users"}',NULL,NULL,'pending',0,NULL,NULL,NULL,NULL);
INSERT INTO steps VALUES('fixturerun02',1,'step_1','vacuum_table','users','high','{"table": "users"}',NULL,NULL,'pending',0,NULL,NULL,NULL,NULL);
CREATE TABLE events (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	step_idx INTEGER, 
	at VARCHAR(32) NOT NULL, 
	kind VARCHAR(64) NOT NULL, 
	data TEXT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO events VALUES(1,'-',NULL,'2026-11-23T15:46:32.021+00:00','schema_upgraded','{"to": 1}');
INSERT INTO events VALUES(2,'-',NULL,'2026-11-23T15:46:32.032+00:00','schema_upgraded','{"to": 2}');
INSERT INTO events VALUES(3,'-',NULL,'2026-11-23T15:46:32.037+00:00','schema_upgraded','{"to": 3}');
INSERT INTO events VALUES(4,'-',NULL,'2026-11-23T15:46:32.039+00:00','schema_upgraded','{"to": 4}');
INSERT INTO events VALUES(5,'-',NULL,'2026-11-23T15:46:32.044+00:00','schema_upgraded','{"to": 5}');
INSERT INTO events VALUES(6,'-',NULL,'2026-11-23T15:46:32.045+00:00','schema_upgraded','{"to": 6}');
INSERT INTO events VALUES(7,'fixturerun01',NULL,'2026-11-23T15:46:32.058+00:00','run_started','{"dry_run": false, "job": {"type": "full"}}');
INSERT INTO events VALUES(8,'fixturerun01',0,'2026-11-23T15:46:32.060+00:00','step_started','{"attempt": 1}');
INSERT INTO events VALUES(9,'fixturerun01',0,'2026-11-23T15:46:32.073+00:00','step_succeeded','{}');
INSERT INTO events VALUES(10,'fixturerun01',1,'2026-11-23T15:46:32.086+00:00','approval','{"by": "alice", "decision": "approved", "how": "cli"}');
INSERT INTO events VALUES(11,'fixturerun01',1,'2026-11-23T15:46:32.088+00:00','step_started','{"attempt": 1}');
INSERT INTO events VALUES(12,'fixturerun01',1,'2026-11-23T15:46:32.092+00:00','step_succeeded','{}');
INSERT INTO events VALUES(13,'fixturerun01',NULL,'2026-11-23T15:46:32.102+00:00','run_finished','{"error": null, "status": "completed"}');
INSERT INTO events VALUES(14,'fixturerun02',NULL,'2026-11-23T15:46:32.105+00:00','run_started','{"dry_run": false, "job": {"type": "quick"}}');
INSERT INTO events VALUES(15,'fixturerun02',1,'2026-11-23T15:46:32.109+00:00','approval','{"by": "bob", "decision": "denied", "how": "cli"}');
INSERT INTO events VALUES(16,'fixturerun02',NULL,'2026-11-23T15:46:32.126+00:00','stop_requested','{"by": "bob"}');
INSERT INTO events VALUES(17,'fixturerun02',NULL,'2026-11-23T15:46:32.129+00:00','run_finished','{"error": null, "status": "denied"}');
INSERT INTO events VALUES(18,'-',NULL,'2026-11-23T15:46:32.168+00:00','schedule_missed','{"due": "2025-01-03T02:00:00+00:00", "schedule": "nightly"}');
CREATE TABLE approvals (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	step_idx INTEGER NOT NULL, 
	decision VARCHAR(16) NOT NULL, 
	decided_by VARCHAR(128) NOT NULL, 
	how VARCHAR(64) NOT NULL, 
	reason TEXT NOT NULL, 
	at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO approvals VALUES(1,'fixturerun01',1,'approved','alice','cli','night window','2026-11-23T15:46:32.084+00:00');
INSERT INTO approvals VALUES(2,'fixturerun02',1,'denied','bob','cli','not tonight','2026-11-23T15:46:32.108+00:00');
CREATE TABLE backups (
	id INTEGER NOT NULL, 
	target VARCHAR(128) NOT NULL, 
	run_id VARCHAR(32), 
	kind VARCHAR(16) NOT NULL, 
	path TEXT NOT NULL, 
	sha256 VARCHAR(64), 
	size_bytes INTEGER, 
	manifest TEXT, 
	created_at VARCHAR(32) NOT NULL, 
	verified_at VARCHAR(32), 
	verification TEXT, 
	deleted_at VARCHAR(32), 
	PRIMARY KEY (id)
);
INSERT INTO backups VALUES(1,'demo','fixturerun01','full','/backups/demo-1.db','cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd',8192,'{"tables": ["users"]}','2025-01-01T00:00:00.000+00:00','2026-11-23T15:46:32.141+00:00','{"ok": true}',NULL);
INSERT INTO backups VALUES(2,'shop',NULL,'logical','/backups/shop-1.sql',NULL,NULL,NULL,'2025-01-02T00:00:00.000+00:00',NULL,NULL,NULL);
CREATE TABLE target_locks (
	target VARCHAR(128) NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	pid INTEGER NOT NULL, 
	hostname VARCHAR(255) NOT NULL, 
	acquired_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (target)
);
INSERT INTO target_locks VALUES('demo','fixturerun02',1169,'vm','2026-11-23T15:46:32.188+00:00');
CREATE TABLE statements (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32) NOT NULL, 
	step_idx INTEGER NOT NULL, 
	attempt INTEGER NOT NULL, 
	sql TEXT NOT NULL, 
	parameters TEXT, 
	started_at VARCHAR(32) NOT NULL, 
	finished_at VARCHAR(32), 
	rows INTEGER, 
	error TEXT, 
	PRIMARY KEY (id)
);
INSERT INTO statements VALUES(1,'fixturerun01',0,1,'ANALYZE users',NULL,'2026-11-23T15:46:32.065+00:00','2026-11-23T15:46:32.073+00:00',0,NULL);
CREATE TABLE run_controls (
	run_id VARCHAR(32) NOT NULL, 
	stop_requested_at VARCHAR(32) NOT NULL, 
	requested_by VARCHAR(128) NOT NULL, 
	PRIMARY KEY (run_id)
);
INSERT INTO run_controls VALUES('fixturerun02','2026-11-23T15:46:32.125+00:00','bob');
CREATE TABLE target_health (
	target VARCHAR(128) NOT NULL, 
	consecutive_failures INTEGER NOT NULL, 
	last_error TEXT, 
	open_until VARCHAR(32), 
	PRIMARY KEY (target)
);
INSERT INTO target_health VALUES('shop',1,'connection refused',NULL);
CREATE TABLE step_progress (
	run_id VARCHAR(32) NOT NULL, 
	step_idx INTEGER NOT NULL, 
	progress TEXT NOT NULL, 
	updated_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (run_id, step_idx)
);
INSERT INTO step_progress VALUES('fixturerun02',0,'{"deleted": 1000, "last_key": 42}','2026-11-23T15:46:32.113+00:00');
CREATE TABLE schedules (
	name VARCHAR(128) NOT NULL, 
	cron VARCHAR(128) NOT NULL, 
	timezone VARCHAR(64) NOT NULL, 
	words TEXT NOT NULL, 
	agent VARCHAR(64) NOT NULL, 
	job TEXT NOT NULL, 
	target VARCHAR(128), 
	options TEXT NOT NULL, 
	paused BOOLEAN NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	created_by VARCHAR(128) NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO schedules VALUES('nightly','0 2 * * *','UTC','["run", "maintenance", "--type", "full"]','maintenance','{"type": "full"}','demo','{"approver": null}',0,'2026-11-23T15:46:32.148+00:00','root');
INSERT INTO schedules VALUES('weekly','0 3 * * 0','UTC','["run", "maintenance", "--type", "full"]','maintenance','{"type": "full"}','demo','{"approver": null}',1,'2026-11-23T15:46:32.152+00:00','root');
CREATE TABLE schedule_runs (
	run_id VARCHAR(32) NOT NULL, 
	schedule VARCHAR(128) NOT NULL, 
	how VARCHAR(16) NOT NULL, 
	at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (run_id)
);
INSERT INTO schedule_runs VALUES('fixturerun01','nightly','cron','2026-11-23T15:46:32.160+00:00');
CREATE TABLE plan_cache (
	cache_key VARCHAR(64) NOT NULL, 
	target VARCHAR(128) NOT NULL, 
	agent VARCHAR(64), 
	model VARCHAR(256) NOT NULL, 
	request TEXT NOT NULL, 
	catalog_fingerprint VARCHAR(64) NOT NULL, 
	answer TEXT NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	used_at VARCHAR(32) NOT NULL, 
	uses INTEGER NOT NULL, 
	PRIMARY KEY (cache_key)
);
INSERT INTO plan_cache VALUES('kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk','demo','maintenance','llama','tidy up','efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef','{"steps": []}','2026-11-23T15:46:32.172+00:00','2026-11-23T15:46:32.172+00:00',0);
CREATE TABLE scratch (
	id INTEGER NOT NULL, 
	run_id VARCHAR(32), 
	target VARCHAR(128), 
	kind VARCHAR(16) NOT NULL, 
	name TEXT NOT NULL, 
	details TEXT NOT NULL, 
	pid INTEGER NOT NULL, 
	hostname VARCHAR(255) NOT NULL, 
	pid_started VARCHAR(32), 
	created_at VARCHAR(32) NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO scratch VALUES(1,'fixturerun01','demo','file','/tmp/aishell-scratch-x','{}',1169,'vm','205582','2026-11-23T15:46:32.184+00:00');
CREATE INDEX ix_runs_status ON runs (status);
CREATE INDEX ix_steps_tool ON steps (tool);
CREATE INDEX ix_events_run_id ON events (run_id);
CREATE INDEX ix_approvals_run_id ON approvals (run_id);
CREATE INDEX ix_backups_target ON backups (target);
CREATE INDEX ix_statements_run_id ON statements (run_id);
CREATE INDEX ix_schedule_runs_schedule ON schedule_runs (schedule);
COMMIT;
