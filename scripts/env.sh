# Sourced by the other scripts: where prebuilt dependencies live and how cargo finds them.
# The DuckDB library sits in a per-user cache shared by every checkout, so its path (baked
# into binaries as an rpath) is the same for every clone and CI run; `.deps/duckdb` in the
# checkout links to it for plain `cargo` use (.cargo/config.toml).
SOTP_DEPS_DIR="${SOTP_DEPS_DIR:-$HOME/.cache/sotp/deps}"
DUCKDB_NPM_PACKAGE="@duckdb/node-bindings-linux-x64"
DUCKDB_NPM_VERSION="1.5.6-r.1"   # DuckDB 1.5.6, matching the duckdb crate =1.10506.0
export DUCKDB_LIB_DIR="$SOTP_DEPS_DIR/duckdb-$DUCKDB_NPM_VERSION"
# QuestDB server for tests (scripts/peers/questdb): Maven artifact org.questdb:questdb.
# 9.x is compiled for Java 17, the machine's default Java.
QUESTDB_VERSION="9.3.4"
# Kafka for the scale-out tests (scripts/peers/kafka): org.apache.kafka:kafka_2.13 and its
# dependencies from Maven, KRaft mode (no ZooKeeper), Java 17.
KAFKA_VERSION="4.4.0"
