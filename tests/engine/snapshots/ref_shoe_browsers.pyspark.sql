SELECT
  `t14`.`customer_id`
FROM (
  SELECT
    `t8`.`customer_id`
  FROM (
    SELECT
      `t4`.`customer_id`,
      COUNT(*) AS `value`
    FROM (
      SELECT
        *
      FROM `events` AS `t0`
      WHERE
        `t0`.`type` = 'track'
        AND `t0`.`name` = 'Product Viewed'
        AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
        AND `t0`.`timestamp` > CAST('2026-01-30T12:00:00+00:00' AS TIMESTAMP)
        AND GET_JSON_OBJECT(`t0`.`properties`, '$.category') = 'shoes'
    ) AS `t4`
    GROUP BY
      1
  ) AS `t8`
  WHERE
    `t8`.`value` >= 2.0
) AS `t14`
LEFT SEMI JOIN (
  SELECT
    `t7`.`customer_id`
  FROM (
    SELECT
      *
    FROM `customers` AS `t1`
    WHERE
      GET_JSON_OBJECT(`t1`.`traits`, '$.country') IN ('UA', 'PL')
  ) AS `t7`
) AS `t10`
  ON `t14`.`customer_id` = `t10`.`customer_id`
LEFT ANTI JOIN (
  SELECT
    `t5`.`customer_id`
  FROM (
    SELECT DISTINCT
      `t0`.`customer_id`
    FROM `events` AS `t0`
    WHERE
      `t0`.`type` = 'track'
      AND `t0`.`name` = 'Order Completed'
      AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
  ) AS `t5`
  LEFT ANTI JOIN (
    SELECT
      `t0`.`customer_id`
    FROM `events` AS `t0`
    WHERE
      `t0`.`type` = 'track'
      AND `t0`.`name` = 'Order Completed'
      AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
      AND `t0`.`timestamp` > CAST('2026-01-30T12:00:00+00:00' AS TIMESTAMP)
  ) AS `t6`
    ON `t5`.`customer_id` = `t6`.`customer_id`
) AS `t13`
  ON `t14`.`customer_id` = `t13`.`customer_id`
