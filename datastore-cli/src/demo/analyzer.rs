//! The demo step of health-events-analyzer: its per-event counts and its rule pipelines
//! (`aggregate_each`).

use super::*;
use datastore::Aggregate;

impl Demo<'_> {
    /// health-events-analyzer: non-fatal unhealthy events per node, distinct check names.
    pub(super) async fn health_events_analyzer(&mut self) -> CliResult<()> {
        let health = self.store.health_events();
        let c = "health-events-analyzer";
        let nodes = (self.args.nodes as usize).min(ANALYZER_NODES);
        let prefix = Filter::ne(fields::AGENT, "health-events-analyzer").and(
            Filter::is_in(fields::PROCESSING_STRATEGY, [1, 3])
                .or(Filter::exists(fields::PROCESSING_STRATEGY, false)),
        );
        let t = Instant::now();
        let (mut total, mut max, mut max_node) = (0u64, 0u64, String::new());
        for i in 0..nodes {
            let node = synth::node_name(i);
            let f = prefix
                .clone()
                .and(Filter::eq(fields::NODE_NAME, node.as_str()))
                .and(Filter::eq(fields::IS_FATAL, false))
                .and(Filter::eq(fields::IS_HEALTHY, false));
            let n = health.collection().count(&f).await?;
            total += n;
            if n > max {
                (max, max_node) = (n, node);
            }
        }
        self.step(
            c,
            &format!("count non-fatal unhealthy events per node (x{nodes})"),
            format!("{total} total, max {max} ({max_node})"),
            t.elapsed(),
        );

        self.analyzer_rules(&prefix).await?;

        let (names, t) = timed(
            health
                .collection()
                .distinct(fields::CHECK_NAME, &Filter::All),
        )
        .await;
        self.step(
            c,
            "distinct(healthevent.checkname)",
            format!("{} check names", names?.len()),
            t,
        );
        Ok(())
    }

    /// health-events-analyzer's rules: MongoDB pipelines with `this.` placeholders, bound
    /// from one non-fatal unhealthy event and run through `aggregate` on either provider.
    async fn analyzer_rules(&mut self, analyzed: &Filter) -> CliResult<()> {
        let c = "health-events-analyzer";
        let collection = self.store.health_event_collection();
        let pick = analyzed
            .clone()
            .and(Filter::eq(fields::NODE_NAME, synth::node_name(1).as_str()))
            .and(Filter::eq(fields::IS_HEALTHY, false));
        let Some(event) = collection
            .find(&pick, &FindOptions::default().limit(1))
            .await?
            .pop()
        else {
            self.step(
                c,
                "rules: no unhealthy event on node-1 to analyse",
                "skipped",
                Duration::ZERO,
            );
            return Ok(());
        };
        let rules = [
            (
                "rule: same check >= 3 times on the node within 24 h",
                serde_json::json!([
                    {"$match": {"healthevent.nodename": "this.healthevent.nodename",
                                "healthevent.ishealthy": false}},
                    {"$match": {"$expr": {"$gte": ["$healthevent.generatedtimestamp.seconds",
                        {"$subtract": ["this.healthevent.generatedtimestamp.seconds", 86_400]}]}}},
                    {"$group": {"_id": "$healthevent.checkname", "n": {"$sum": 1}}},
                    {"$match": {"n": {"$gte": 3}}},
                    {"$sort": {"n": -1}},
                ]),
            ),
            (
                "rule: the node's errors on >= 2 distinct entities",
                serde_json::json!([
                    {"$match": {"healthevent.nodename": "this.healthevent.nodename",
                                "healthevent.isfatal": false}},
                    {"$unwind": "$healthevent.entitiesimpacted"},
                    {"$group": {"_id": "$healthevent.nodename",
                                "entities": {"$addToSet": "$healthevent.entitiesimpacted.entityvalue"},
                                "events": {"$sum": 1}}},
                    {"$match": {"$expr": {"$gte": [{"$size": "$entities"}, 2]}}},
                ]),
            ),
        ];
        let mut bound = Vec::with_capacity(rules.len());
        let mut each = Vec::with_capacity(rules.len());
        for (what, json) in rules {
            let pipeline = Pipeline::parse(&json)?.bind_this(&event)?;
            let (out, t) = timed(collection.aggregate(&pipeline)).await;
            let out = out?;
            self.step(c, what, format!("{} result document(s)", out.len()), t);
            bound.push(pipeline);
            each.push(out);
        }
        let (together, t) = timed(collection.aggregate_each(&bound)).await;
        let together = together?
            .into_iter()
            .collect::<datastore::Result<Vec<_>>>()?;
        if together != each {
            return Err(CliError::check(
                "health-events-analyzer: aggregate_each gave other documents than aggregate",
            ));
        }
        self.step(
            c,
            "both rules at once: aggregate_each (one fetch on PostgreSQL)",
            "the same result documents",
            t,
        );
        Ok(())
    }
}
