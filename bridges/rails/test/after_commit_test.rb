# frozen_string_literal: true

require_relative "test_helper"
require "active_record"

ActiveRecord::Base.establish_connection(adapter: "sqlite3", database: ":memory:")
ActiveRecord::Schema.verbose = false
ActiveRecord::Schema.define { create_table(:orders) { |t| t.string :state } }

class Order < ActiveRecord::Base; end

# Publish-after-commit with a real ActiveRecord (sqlite) and a real nsqd.
class AfterCommitTest < Minitest::Test
  def setup
    @topic = unique_topic("after-commit")
    Pushgate.configure do |c|
      c.nsqd_http_address = NSQD.http_address
      c.topic = @topic
    end
  end

  def publish_later(data)
    Pushgate.publish_after_commit { Pushgate.broadcast("orders", data) }
  end

  def test_publishes_when_the_transaction_commits
    Order.transaction do
      Order.create!(state: "paid")
      publish_later("paid")
      assert_equal 0, NSQD.message_count(@topic), "nothing leaves before the commit"
    end
    assert_equal ["paid"], NSQD.read_back(@topic, 1).map { |m| m["data"] }
  end

  def test_publishes_nothing_when_the_transaction_rolls_back
    Order.transaction do
      Order.create!(state: "doomed")
      publish_later("doomed")
      raise ActiveRecord::Rollback
    end
    assert_equal 0, NSQD.message_count(@topic)
    assert_equal 0, Order.where(state: "doomed").count
  end

  def test_nested_savepoint_waits_for_the_outer_commit_and_rolls_back_with_it
    Order.transaction do
      Order.transaction(requires_new: true) { publish_later("inner") }
      assert_equal 0, NSQD.message_count(@topic), "a released savepoint is not a commit"
    end
    assert_equal ["inner"], NSQD.read_back(@topic, 1).map { |m| m["data"] }

    Order.transaction do
      Order.transaction(requires_new: true) do
        publish_later("rolled back savepoint")
        raise ActiveRecord::Rollback
      end
      publish_later("outer")
    end
    assert_equal ["outer"], NSQD.read_back(@topic, 1).map { |m| m["data"] }
    assert_equal 2, NSQD.message_count(@topic), "inner and outer; never the rolled-back savepoint"
  end

  def test_outside_a_transaction_it_publishes_at_once
    publish_later("now")
    assert_equal 1, NSQD.message_count(@topic)
  end
end
