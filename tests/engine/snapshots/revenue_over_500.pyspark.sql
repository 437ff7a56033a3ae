SELECT
  `t2`.`customer_id`
FROM (
  SELECT
    `t1`.`customer_id`,
    COALESCE(SUM(FROM_JSON(`t1`.`properties`, 'struct<`revenue`: double>').`revenue`), 0) AS `value`
  FROM (
    SELECT
      *
    FROM `events` AS `t0`
    WHERE
      `t0`.`type` = 'track'
      AND `t0`.`name` = 'Order Completed'
      AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
  ) AS `t1`
  GROUP BY
    1
) AS `t2`
WHERE
  `t2`.`value` >= 500.0
