SELECT
  `t2`.`customer_id`
FROM (
  SELECT
    `t1`.`customer_id`,
    GET_JSON_OBJECT(`t1`.`properties`, '$.category') AS `value`,
    ROW_NUMBER() OVER (
      PARTITION BY `t1`.`customer_id`
      ORDER BY `t1`.`timestamp` ASC NULLS LAST, `t1`.`message_id` ASC NULLS LAST
    ) - 1 AS `rank`
  FROM (
    SELECT
      *
    FROM `events` AS `t0`
    WHERE
      `t0`.`type` = 'track'
      AND `t0`.`name` = 'Order Completed'
      AND `t0`.`timestamp` <= CAST('2026-03-01T12:00:00+00:00' AS TIMESTAMP)
  ) AS `t1`
) AS `t2`
WHERE
  `t2`.`rank` = 0 AND `t2`.`value` = 'shoes'
