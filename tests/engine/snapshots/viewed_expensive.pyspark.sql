SELECT DISTINCT
  `t1`.`customer_id`
FROM (
  SELECT
    *
  FROM `events` AS `t0`
  WHERE
    `t0`.`type` = 'track'
    AND `t0`.`name` = 'Product Viewed'
    AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
    AND FROM_JSON(`t0`.`properties`, 'struct<`price`: double>').`price` >= 150
) AS `t1`
